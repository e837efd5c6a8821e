"""The Check servicer: one runtime snapshot, RequestView in, pipeline, one response out."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import replace

import grpc
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest
from google.protobuf.message import DecodeError

from tenantgate.decision import Decision, Deny, Reason, encode_response
from tenantgate.errors import (
    ApiKeyStoreUnavailable,
    DependencyError,
    KeySetUnavailable,
    QuotaStoreUnavailable,
)
from tenantgate.observe import metrics
from tenantgate.observe.audit import AuditRecord
from tenantgate.observe.throttle import Throttle
from tenantgate.pipeline import CheckState, decide
from tenantgate.request import RequestView
from tenantgate.runtime import Runtime

log = logging.getLogger("tenantgate.authz")
# A dependency that failed becomes a decision chosen on purpose: 503, fail closed. (The
# quota stage applies its own configured failure mode before anything reaches here.)
_DEPENDENCY_DENIALS: dict[type[DependencyError], Reason] = {
    KeySetUnavailable: Reason.KEYSET_UNAVAILABLE,
    QuotaStoreUnavailable: Reason.QUOTA_UNAVAILABLE,
    ApiKeyStoreUnavailable: Reason.API_KEY_STORE_UNAVAILABLE,
}


SERVICE = "envoy.service.auth.v3.Authorization"
MAX_REQUEST_ID_CHARS = 128


class AuthorizationServicer:
    """Answers Check with serialized CheckResponse bytes (allows are encoded by wire.py)."""

    def __init__(self, get_runtime: Callable[[], Runtime]) -> None:
        self._get_runtime = get_runtime
        self._unparseable_said = Throttle(60.0)  # a direct caller can send one per call

    def add_to_server(self, server: grpc.aio.Server) -> None:
        handler = grpc.unary_unary_rpc_method_handler(
            self.check_parsed, request_deserializer=parse_check_request,
            response_serializer=None)  # check_parsed returns bytes already
        handlers = {"Check": handler}
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        # Registered as well, like generated code does: gRPC then matches the method when the
        # call arrives instead of asking every generic handler, which is cheaper per Check.
        server.add_registered_method_handlers(SERVICE, handlers)

    async def Check(self, request: CheckRequest, context: grpc.aio.ServicerContext
                    ) -> bytes:
        """Check for a message parsed elsewhere (tests, tools); gRPC calls check_parsed."""
        return await self.check_parsed((request, request.ByteSize()), context)

    async def check_parsed(self, parsed: tuple[CheckRequest, int] | None,
                           context: grpc.aio.ServicerContext) -> bytes:
        if parsed is None:
            return self._unparseable()
        request, size = parsed
        started = time.perf_counter()
        # One snapshot for the whole Check, pinned: a reload closes it only after the last
        # call holding it has finished.
        runtime = self._get_runtime().pin()
        try:
            view = RequestView.from_check(request, size)
            if not view.request_id or len(view.request_id) > MAX_REQUEST_ID_CHARS:
                # Envoy's are UUIDs; a client-supplied one goes into the signed context and
                # the denial body, so an absurd one is replaced rather than carried.
                view = replace(view, request_id=uuid.uuid4().hex)
            state = CheckState(runtime, view)
            try:
                decision = await decide(state)
            except DependencyError as exc:
                decision = Deny(_DEPENDENCY_DENIALS.get(type(exc),
                                                        Reason.DEPENDENCY_UNAVAILABLE))
            except Exception:
                metrics.INTERNAL_ERRORS.inc()
                log.exception("internal error in Check")
                await context.abort(grpc.StatusCode.INTERNAL, "internal error")
                raise  # abort raises; this line only satisfies type checkers
            _observe(state, decision, time.perf_counter() - started)
            return encode_response(decision, view.request_id)
        finally:
            runtime.unpin()

    def _unparseable(self) -> bytes:
        # A message protobuf cannot parse (truncated, or a `string` field such as a header
        # value or the path that is not UTF-8) is denied 400 malformed_request, a CheckResponse
        # like every denial, not a gRPC error: Envoy answers a gRPC error with its own
        # failure_mode_allow / status_on_error, so the client's bytes would choose the outcome
        # (allowed where failure_mode_allow is set, 503 from the generated bootstrap) and it
        # would count as tenantgate failing. Envoy (1.40) sanitizes obs-text to valid UTF-8:
        # a direct caller of the port is the one who gets here.
        started = time.perf_counter()
        if self._unparseable_said.ready():
            log.warning("Check refused a request protobuf cannot parse (truncated, or a string "
                        "that is not UTF-8): denied 400 malformed_request")
        runtime = self._get_runtime().pin()
        try:
            state = CheckState(runtime, _unparsed_view())
            decision = Deny(Reason.MALFORMED_REQUEST)
            _observe(state, decision, time.perf_counter() - started)  # audited, no path
            return encode_response(decision, state.request.request_id)
        finally:
            runtime.unpin()


def parse_check_request(data: bytes) -> tuple[CheckRequest, int] | None:
    """The message and its serialized length, which bounds every header value's length: known
    here for free, where RequestView would otherwise walk the whole message to compute it.
    None when protobuf cannot parse it: check_parsed answers that. (Raised out of here, gRPC
    would answer UNKNOWN with the exception's text and log a traceback, per call.)"""
    try:
        return CheckRequest.FromString(data), len(data)
    except DecodeError:
        return None


def _unparsed_view() -> RequestView:
    # Nothing of the request can be read: a fresh request id, as for an absurd one.
    return RequestView(request_id=uuid.uuid4().hex, method="", path="", host="", headers={},
                       authorization=None, duplicated=frozenset(), underscored=False,
                       oversized=False, content_length=None)


def _observe(s: CheckState, decision: Decision, elapsed: float) -> None:
    allowed = not isinstance(decision, Deny)
    tenant_id = s.tenant.id if s.tenant else _claimed_tenant(s)
    label = s.tenant.label if s.tenant else s.runtime.tenants.label(tenant_id)
    metrics.CHECKS.inc(("allow" if allowed else "deny", decision.reason, label))
    metrics.CHECK_SECONDS.observe(elapsed)
    audit = s.runtime.audit
    if audit.wants(allowed):
        identity = s.identity
        key_id: str | None
        if (refused := s.refused_key) is not None:  # a real key id: name the key and its tenant
            tenant_id, key_id = refused.tenant, refused.key_id
        else:
            key_id = identity.key_id if identity else None
        audit.write(AuditRecord(
            request_id=s.request.request_id, tenant=tenant_id,
            subject=identity.subject if identity else None,
            issuer=identity.issuer if identity else None,
            key_id=key_id,
            method=s.request.method, path=s.request.path,
            decision="allow" if allowed else "deny", reason=str(decision.reason),
            status=decision.status, latency_ms=round(elapsed * 1000, 3)),
            cross_tenant=decision.reason is Reason.CROSS_TENANT_PATH,
            tenant=s.tenant.id if s.tenant else None)


def _claimed_tenant(s: CheckState) -> str | None:
    """The tenant a denied caller claimed, when it is a safe string, for the audit line."""
    claim = s.identity.tenant_claim if s.identity else None
    return claim if isinstance(claim, str) and s.runtime.tenants.valid_id(claim) else None
