"""`envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`, on the quota store."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote

import grpc
from envoy.service.ratelimit.v3.rls_pb2 import RateLimitRequest as Request
from envoy.service.ratelimit.v3.rls_pb2 import RateLimitResponse as Response
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import DecodeError

from tenantgate.config.types import DURATION_MAX_SECONDS
from tenantgate.observe import quota as metrics
from tenantgate.observe.metrics import OTHER_TENANT
from tenantgate.observe.throttle import Throttle
from tenantgate.quota.headers import retry_seconds
from tenantgate.quota.limiter import Limiter, Verdict
from tenantgate.quota.rls_config import UNIT_SECONDS, Node, RlsLimit
from tenantgate.quota.store import Bucket, BucketState

if TYPE_CHECKING:
    from tenantgate.runtime import Runtime

log = logging.getLogger("tenantgate.quota")
SERVICE = "envoy.service.ratelimit.v3.RateLimitService"
_UNITS = {name: getattr(Response.RateLimit, name.upper()) for name in UNIT_SECONDS}
# Bounds on one request, far above what Envoy sends (a descriptor per matching `rate_limits`
# entry, an entry per action) and low enough that one call cannot hold the event loop, flood
# the store or push other tenants' buckets out of the embedded store.
MAX_DESCRIPTORS = 64  # rate_limits entries applying to one route: real ones have a handful
MAX_ENTRIES = 16  # actions in one rate_limits entry: real ones have one to four
# A key (UTF-8) longer than this is refused: keys come from Envoy's config, not the client.
MAX_ENTRY_BYTES = 1024
# A value (a client's header or path) escaped longer than this is matched as sent and keyed by
# its digest: the embedded store, degraded buckets and the RESP cache count keys, not bytes.
MAX_KEY_PART = 128
UNPARSEABLE = "not a RateLimitRequest protobuf can parse (truncated, or a string not UTF-8)"


@dataclass(frozen=True, slots=True)
class Matched:
    """A request descriptor that reached a node with a limit."""

    index: int
    limit: RlsLimit
    shadow: bool
    bucket: Bucket
    cost: int


def match(root: Node, entries: list[tuple[str, str]]) -> Node | None:
    node: Node | None = root
    for key, value in entries:
        node = node.child(key, value) if node is not None else None
    return node


def _key_part(value: str) -> str:
    # Escaped, so a brace in a header value cannot move the hash tag. One too long becomes its
    # digest: keys stay bounded, and the call is not refused (a refusal is a failure of this
    # service to Envoy, so failure_mode_deny decided: open, a long query string dodged every
    # limit). Measured escaped: escaping triples a byte. `#` is escaped in every value, so no
    # value's key part reads as a digest.
    raw = value.encode()
    escaped = quote(raw, safe="") if len(raw) <= MAX_KEY_PART else None  # escaping lengthens
    if escaped is None or len(escaped) > MAX_KEY_PART:
        return "#" + hashlib.sha256(raw).hexdigest()
    return escaped


def descriptor_bucket(domain: str, entries: list[tuple[str, str]], limit: RlsLimit,
                      tenant_key: str) -> Bucket:
    # Hash tag: the tenant entry when there is one (one tenant's keys share a slot), else the
    # first entry (`%3D`: its `=` escaped, as the tag was before values could be digests).
    tenant = next((v for k, v in entries if k == tenant_key), None)
    tag = _key_part(tenant) if tenant is not None else (
        f"{quote(entries[0][0], safe='')}%3D{_key_part(entries[0][1])}")
    path = "|".join(f"{quote(k, safe='')}={_key_part(v)}" for k, v in entries)
    period = UNIT_SECONDS[limit.unit]
    name = limit.name or f"{domain}-{limit.unit}"
    # A limit of 0 never reaches the store (_decide_group); max() keeps the bucket valid.
    return Bucket(f"rl:{{t:{tag}}}:{quote(domain, safe='')}:{path}:{period}", name,
                  max(1, limit.requests_per_unit), float(period),
                  max(1, limit.requests_per_unit))


class RateLimitServicer:
    """Envoy's global rate-limit filter asks here; one runtime snapshot per call."""

    def __init__(self, get_runtime: Callable[[], Runtime]) -> None:
        self._get_runtime = get_runtime
        self._refusals = Throttle(10.0)  # one warning per 10 s: a caller could send them all

    async def ShouldRateLimit(self, data: bytes, context: grpc.aio.ServicerContext
                              ) -> Response:
        """`data`: the request as sent, parsed here (add_to_server registers no deserializer)."""
        try:
            request = Request.FromString(data)
        except DecodeError:
            # Not in gRPC's deserializer: what raises there is answered UNKNOWN with the
            # exception's text and logged with a traceback, on every call. OVER_LIMIT, not an
            # error: descriptor values carry the client's headers and path, and an error hands
            # the request to Envoy's failure_mode_deny, open under quota.failure_mode open.
            self._count_refusal(OTHER_TENANT, UNPARSEABLE)
            return Response(overall_code=Response.OVER_LIMIT)
        # Pinned, as Check's: a reload closes this snapshot only after the call has finished.
        runtime = self._get_runtime().pin()
        try:
            return await self._should_rate_limit(runtime.limiter, request, context)
        finally:
            runtime.unpin()

    async def _should_rate_limit(self, limiter: Limiter | None, request: Request,
                                 context: grpc.aio.ServicerContext) -> Response:
        domains = limiter.rls_domains if limiter is not None else {}
        root = domains.get(request.domain)
        label = request.domain if root is not None else OTHER_TENANT
        if (problem := _too_big(request)) is not None:
            await self._refuse(label, problem, context)
        if limiter is None or root is None:
            metrics.rls_request(label, metrics.RlsResult.OK)
            return Response(overall_code=Response.OK,
                            statuses=[Response.DescriptorStatus(code=Response.OK)
                                      for _ in request.descriptors])
        matched = _matched(request, root, limiter.config.ratelimit_service.tenant_key)
        verdicts = await _decide(limiter, matched)
        response = _response(request, matched, verdicts)
        # A group over the limit decides the call whatever others could not decide (a limit of
        # 0 and the over-limit cache need no store), and a shadow limit never limits. Else
        # UNAVAILABLE, not a guess: Envoy's failure_mode_deny decides what happens next.
        if response.overall_code == Response.OK and _failed(limiter, matched, verdicts):
            metrics.rls_request(label, metrics.RlsResult.UNAVAILABLE)
            await context.abort(grpc.StatusCode.UNAVAILABLE, "rate limit store unavailable")
        metrics.rls_request(label, _result(response, matched, verdicts))
        return response

    async def _refuse(self, label: str, problem: str, context: grpc.aio.ServicerContext
                      ) -> None:
        """INVALID_ARGUMENT (abort raises), counted and logged."""
        self._count_refusal(label, problem)
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)

    def _count_refusal(self, label: str, problem: str) -> None:
        """Counted (result="invalid") and logged; `problem` never quotes the caller's data."""
        metrics.rls_request(label, metrics.RlsResult.INVALID)
        if self._refusals.ready():
            log.warning("ShouldRateLimit refused (domain %s): %s", label, problem)


def _too_big(request: Request) -> str | None:
    """What makes the request too big to answer, or None; it never quotes the caller's data."""
    if len(request.descriptors) > MAX_DESCRIPTORS:
        return f"more than {MAX_DESCRIPTORS} descriptors"
    for descriptor in request.descriptors:
        if len(descriptor.entries) > MAX_ENTRIES:
            return f"a descriptor has more than {MAX_ENTRIES} entries"
        for entry in descriptor.entries:
            if len(entry.key.encode()) > MAX_ENTRY_BYTES:
                return f"a descriptor key is longer than {MAX_ENTRY_BYTES} bytes"
    return None


def _matched(request: Request, root: Node, tenant_key: str) -> list[Matched]:
    default_cost = request.hits_addend or 1  # 0 means unset: one hit
    out = []
    for i, descriptor in enumerate(request.descriptors):
        entries = [(e.key, e.value) for e in descriptor.entries]
        node = match(root, entries) if entries else None
        if node is None or node.limit is None or node.unlimited:
            continue
        cost = descriptor.hits_addend.value if descriptor.HasField("hits_addend") else default_cost
        bucket = descriptor_bucket(request.domain, entries, node.limit, tenant_key)
        out.append(Matched(i, node.limit, node.shadow, bucket, cost))
    return out


async def _decide(limiter: Limiter, matched: list[Matched]) -> dict[int, Verdict]:
    """Descriptors sharing a hash tag, cost and shadow flag are decided in one atomic call.

    Identical descriptors share a bucket: it is charged once with their combined hits (a
    script charges a key listed twice only once), and each of them gets that verdict.
    """
    costs: dict[str, int] = {}
    first: dict[str, Matched] = {}
    for m in matched:
        costs[m.bucket.key] = costs.get(m.bucket.key, 0) + m.cost
        first.setdefault(m.bucket.key, m)
    groups: dict[tuple[str, int, bool], list[Matched]] = {}
    for key, m in first.items():
        tag = key.split("}", 1)[0]
        groups.setdefault((tag, costs[key], m.shadow), []).append(m)
    keys = list(groups)
    results = await asyncio.gather(*(_decide_group(limiter, groups[k], k[1]) for k in keys))
    by_key = {m.bucket.key: verdict
              for k, verdict in zip(keys, results, strict=True) for m in groups[k]}
    return {m.index: by_key[m.bucket.key] for m in matched}


async def _decide_group(limiter: Limiter, group: list[Matched], cost: int) -> Verdict:
    buckets = [m.bucket for m in group]
    if any(m.limit.requests_per_unit == 0 for m in group):
        # envoyproxy/ratelimit: 0 per unit is always over the limit; all or nothing, so the
        # group is denied and no bucket of it is charged.
        return Verdict(False, tuple(buckets))
    # A cost above the smallest burst is denied by that bucket whatever its state, so capping
    # it there changes no decision, and keeps every bucket's cost x interval far inside the
    # integers Redis returns (above the largest burst, a 1-per-year bucket's overflowed).
    cost = min(cost, min(b.burst for b in buckets) + 1)
    # Under open or closed a store error is counted and logged by _should_rate_limit, once per
    # call; degraded decides from the local share (a shadow group too: it is still counted).
    verdict = await limiter.decide(buckets, cost, limiter.config.failure_mode)
    if verdict.outcome is None:  # no decision: the store failed (degraded decides locally)
        return Verdict(False, verdict.buckets, unavailable=True)
    return verdict


def _failed(limiter: Limiter, matched: list[Matched], verdicts: dict[int, Verdict]) -> bool:
    """Whether an enforced limit went undecided, so the call is UNAVAILABLE. Counted and warned
    once per call (not per group), as what Envoy then does to a request answered OK or
    UNAVAILABLE: not for a 429, which the caller does not ask about."""
    undecided = [m for m in matched if verdicts[m.index].unavailable]
    if any(not m.shadow for m in undecided):
        # The generated bootstrap sets failure_mode_deny from quota.failure_mode.
        limiter.store_failed(limiter.config.failure_mode)
        return True
    if undecided:  # only shadow limits: answered OK, so the request goes through
        limiter.store_failed("open", "shadow limits only")
    return False


def _response(request: Request, matched: list[Matched], verdicts: dict[int, Verdict]
              ) -> Response:
    statuses = [Response.DescriptorStatus(code=Response.OK) for _ in request.descriptors]
    overall = Response.OK
    for m in matched:
        verdict = verdicts[m.index]
        if m.shadow or verdict.unavailable:
            # OK, and no limit, remaining or reset: Envoy builds x-ratelimit-* and Retry-After
            # from the status with least remaining among those naming a limit, so a shadow or
            # undecided limit would speak to clients. Shadow denials are counted.
            continue
        status = statuses[m.index]
        status.current_limit.CopyFrom(Response.RateLimit(
            name=m.limit.name, requests_per_unit=m.limit.requests_per_unit,
            unit=_UNITS[m.limit.unit]))
        if verdict.admitted:
            state = _state(verdict, m)
            status.limit_remaining = state.remaining
            status.duration_until_reset.CopyFrom(_reset_duration(state))
            continue
        status.code = overall = Response.OVER_LIMIT
        if verdict.outcome is None:  # a limit of 0 in the group: no time makes it pass
            status.duration_until_reset.CopyFrom(Duration(seconds=UNIT_SECONDS[m.limit.unit]))
        else:
            state = _state(verdict, m)
            status.limit_remaining = state.remaining
            status.duration_until_reset.CopyFrom(_retry_duration(state))
    return Response(overall_code=overall, statuses=statuses)


def _state(verdict: Verdict, m: Matched) -> BucketState:
    assert verdict.outcome is not None
    return verdict.outcome.states[verdict.buckets.index(verdict_bucket(verdict, m))]


def verdict_bucket(verdict: Verdict, m: Matched) -> Bucket:
    """The bucket of `m` inside its verdict (degraded verdicts carry rescaled copies)."""
    for bucket in verdict.buckets:
        if bucket.key.endswith(m.bucket.key):
            return bucket
    raise LookupError(m.bucket.key)


def _reset_duration(state: BucketState) -> Duration:
    # Whole seconds, rounded up, and at least 1 with nothing left: Envoy takes x-ratelimit-reset
    # (and the bootstrap Retry-After) from the status with least remaining, an admitted one
    # too, copying only its whole seconds, so 0.95 s left a 429 saying "retry now".
    seconds = max(-(-state.reset_us // 1_000_000), int(state.remaining == 0))
    return Duration(seconds=min(seconds, DURATION_MAX_SECONDS))  # at most 10000 years


def _retry_duration(state: BucketState) -> Duration:
    # Envoy copies only the whole seconds into x-ratelimit-reset, and the bootstrap copies that
    # into Retry-After: 0.4 s would say "retry now". Check's own rule: rounded up, at least 1.
    return Duration(seconds=min(retry_seconds(state), DURATION_MAX_SECONDS))


def _result(response: Response, matched: list[Matched], verdicts: dict[int, Verdict]
            ) -> metrics.RlsResult:
    if response.overall_code == Response.OVER_LIMIT:
        return metrics.RlsResult.OVER_LIMIT
    if any(verdicts[m.index].unavailable for m in matched):  # a shadow group's store failed
        return metrics.RlsResult.UNAVAILABLE
    if any(m.shadow and not verdicts[m.index].admitted for m in matched):
        return metrics.RlsResult.SHADOW_OVER_LIMIT
    return metrics.RlsResult.OK


def add_to_server(server: grpc.aio.Server, get_runtime: Callable[[], Runtime]) -> None:
    # As the generated add_RateLimitServiceServicer_to_server, but handing over the bytes.
    handler = grpc.unary_unary_rpc_method_handler(
        RateLimitServicer(get_runtime).ShouldRateLimit, request_deserializer=None,
        response_serializer=Response.SerializeToString)
    handlers = {"ShouldRateLimit": handler}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_registered_method_handlers(SERVICE, handlers)
