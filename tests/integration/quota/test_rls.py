"""ShouldRateLimit over a real gRPC channel, against an envoyproxy/ratelimit-format file."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest
from envoy.extensions.common.ratelimit.v3.ratelimit_pb2 import RateLimitDescriptor
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.wrappers_pb2 import UInt64Value
from tenantgate.config.model import Config
from tenantgate.observe import quota as quota_metrics
from tenantgate.quota.limiter import Limiter
from tenantgate.quota.rls import MAX_DESCRIPTORS, MAX_ENTRIES, MAX_ENTRY_BYTES, add_to_server
from tenantgate.testing.ports import ReservedPort
from tenantgate.testing.redis import RedisServer

Response = rls_pb2.RateLimitResponse
MakeConfig = Callable[..., Config]

# A file as users of envoyproxy/ratelimit already have it.
RATELIMIT_FILE = """
domain: edge
descriptors:
  - key: tenant
    rate_limit: {unit: day, requests_per_unit: 5}
    descriptors:
      - key: method
        value: POST
        rate_limit: {unit: day, requests_per_unit: 2, name: tenant-writes}
      - key: method
        value: GET
        shadow_mode: true
        rate_limit: {unit: day, requests_per_unit: 1}
  - key: generic_key
    value: health
    rate_limit: {unlimited: true}
  - key: route
    value: "/api/*"
    rate_limit: {unit: minute, requests_per_unit: 3}
  - key: blocked
    rate_limit: {unit: minute, requests_per_unit: 0}
  - key: client
    rate_limit: {unit: second, requests_per_unit: 10}
  - key: watched
    shadow_mode: true
    rate_limit: {unit: day, requests_per_unit: 1}
  - key: yearly
    rate_limit: {unit: year, requests_per_unit: 1}
    descriptors:
      - key: op
        rate_limit: {unit: second, requests_per_unit: 4294967295}
"""
YEAR = 365 * 86400


def descriptor(*entries: tuple[str, str], hits: int | None = None) -> RateLimitDescriptor:
    d = RateLimitDescriptor(entries=[RateLimitDescriptor.Entry(key=k, value=v)
                                     for k, v in entries])
    if hits is not None:
        d.hits_addend.CopyFrom(UInt64Value(value=hits))
    return d


class Snapshot:
    """The part of a Runtime ShouldRateLimit uses: its limiter, and pinning (counted)."""

    def __init__(self, limiter: Limiter) -> None:
        self.limiter = limiter
        self.pins = self.in_flight = 0

    def pin(self) -> Snapshot:
        self.pins += 1
        self.in_flight += 1
        return self

    def unpin(self) -> None:
        self.in_flight -= 1


@contextlib.asynccontextmanager
async def serving(runtime: Snapshot) -> AsyncIterator[rls_pb2_grpc.RateLimitServiceStub]:
    server = grpc.aio.server()
    add_to_server(server, lambda: runtime)  # type: ignore[arg-type, return-value]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield rls_pb2_grpc.RateLimitServiceStub(channel)
    finally:
        await server.stop(None)


@pytest.fixture(params=["memory", "redis"])
async def rls(request: pytest.FixtureRequest, tmp_path: Path, quota_config: MakeConfig,
              make_limiter: Callable[[Config], Limiter]
              ) -> AsyncIterator[rls_pb2_grpc.RateLimitServiceStub]:
    (tmp_path / "edge.yaml").write_text(RATELIMIT_FILE)
    url = request.getfixturevalue("fresh_redis").url if request.param == "redis" else None
    config = quota_config(f"  ratelimit_service: {{config_files: ['{tmp_path}/edge.yaml']}}\n",
                          url)
    limiter = make_limiter(config)
    await limiter.start()
    async with serving(Snapshot(limiter)) as stub:
        yield stub


async def ask(stub: rls_pb2_grpc.RateLimitServiceStub, *descriptors: RateLimitDescriptor,
              hits: int = 0, domain: str = "edge") -> rls_pb2.RateLimitResponse:
    return await stub.ShouldRateLimit(rls_pb2.RateLimitRequest(
        domain=domain, descriptors=list(descriptors), hits_addend=hits))


async def test_tenant_descriptor_limits_each_tenant_separately(rls: object) -> None:
    stub = rls  # type: ignore[assignment]
    codes = [(await ask(stub, descriptor(("tenant", "a")))).overall_code for _ in range(6)]
    assert codes == [Response.OK] * 5 + [Response.OVER_LIMIT]
    other = await ask(stub, descriptor(("tenant", "b")))
    assert other.overall_code == Response.OK
    status = other.statuses[0]
    assert status.current_limit.requests_per_unit == 5
    assert status.current_limit.unit == Response.RateLimit.DAY
    assert status.limit_remaining == 4


async def test_nested_descriptor_has_its_own_limit(rls: object) -> None:
    stub = rls  # type: ignore[assignment]
    writes = [await ask(stub, descriptor(("tenant", "a"), ("method", "POST")))
              for _ in range(3)]
    assert [r.overall_code for r in writes] == [Response.OK] * 2 + [Response.OVER_LIMIT]
    assert writes[0].statuses[0].current_limit.name == "tenant-writes"
    assert writes[2].statuses[0].duration_until_reset.seconds > 0
    # An entry the file does not describe matches nothing: no limit.
    other = await ask(stub, descriptor(("tenant", "a"), ("method", "DELETE")))
    assert other.overall_code == Response.OK and not other.statuses[0].HasField("current_limit")


def rls_requests(result: quota_metrics.RlsResult) -> float:
    return quota_metrics.RLS_REQUESTS.labels("edge", result.value)._value.get()


async def test_shadow_mode_is_counted_but_never_limits_nor_speaks_to_clients(
        rls: object) -> None:
    # Envoy's x-ratelimit-* and Retry-After follow the status with least remaining among those
    # with a current_limit: a shadow limit (1/day) must not answer for the tenant's (5/day).
    stub = rls  # type: ignore[assignment]
    tenant, reads = descriptor(("tenant", "a")), descriptor(("tenant", "a"), ("method", "GET"))
    before = rls_requests(quota_metrics.RlsResult.SHADOW_OVER_LIMIT)
    replies = [await ask(stub, tenant, reads) for _ in range(3)]
    assert [r.overall_code for r in replies] == [Response.OK] * 3
    assert rls_requests(quota_metrics.RlsResult.SHADOW_OVER_LIMIT) == before + 2
    for reply in replies:
        enforced, shadow = reply.statuses
        assert enforced.current_limit.requests_per_unit == 5
        assert shadow == Response.DescriptorStatus(code=Response.OK)
    assert [r.statuses[0].limit_remaining for r in replies] == [4, 3, 2]


async def test_hits_addend_charges_several_hits(rls: object) -> None:
    stub = rls  # type: ignore[assignment]
    assert (await ask(stub, descriptor(("tenant", "a")), hits=4)).statuses[0].limit_remaining == 1
    assert (await ask(stub, descriptor(("tenant", "a")), hits=2)).overall_code == \
        Response.OVER_LIMIT
    # A per-descriptor hits_addend wins over the request's.
    reply = await ask(stub, descriptor(("tenant", "a"), hits=1), hits=3)
    assert reply.overall_code == Response.OK and reply.statuses[0].limit_remaining == 0


async def test_a_descriptor_hits_addend_of_0_is_a_query(rls: object) -> None:
    stub = rls  # type: ignore[assignment]
    queries = [await ask(stub, descriptor(("tenant", "a"), hits=0), hits=3) for _ in range(2)]
    # Explicit 0 wins over the request's 3 and charges nothing; the request's 0 means 1.
    assert [q.statuses[0].limit_remaining for q in queries] == [5, 5]
    assert (await ask(stub, descriptor(("tenant", "a")))).statuses[0].limit_remaining == 4


async def test_several_descriptors_each_get_a_status(rls: object) -> None:
    stub = rls  # type: ignore[assignment]
    for _ in range(3):
        await ask(stub, descriptor(("route", "/api/items")))
    reply = await ask(stub, descriptor(("route", "/api/items")), descriptor(("tenant", "z")),
                      descriptor(("generic_key", "health")))
    assert reply.overall_code == Response.OVER_LIMIT
    assert [s.code for s in reply.statuses] == [Response.OVER_LIMIT, Response.OK, Response.OK]
    assert reply.statuses[0].current_limit.unit == Response.RateLimit.MINUTE


async def test_zero_requests_per_unit_is_always_over_the_limit(rls: object) -> None:
    stub = rls  # type: ignore[assignment]
    replies = [await ask(stub, descriptor(("blocked", "x"), hits=hits)) for hits in (1, 1, 0)]
    assert [r.overall_code for r in replies] == [Response.OVER_LIMIT] * 3
    assert replies[0].statuses[0].current_limit.requests_per_unit == 0
    # No time makes it pass; Retry-After says one unit, never 0 ("retry now").
    assert replies[0].statuses[0].duration_until_reset == Duration(seconds=60)


async def test_identical_descriptors_are_charged_their_combined_hits(rls: object) -> None:
    stub = rls  # type: ignore[assignment]
    tenant = descriptor(("tenant", "a"))
    both = await ask(stub, tenant, tenant, hits=2)  # 4 of 5
    assert both.overall_code == Response.OK
    assert [s.limit_remaining for s in both.statuses] == [1, 1]
    over = await ask(stub, tenant, tenant, hits=1)  # 2 more: over, and charged to neither
    assert [s.code for s in over.statuses] == [Response.OVER_LIMIT] * 2
    assert (await ask(stub, tenant)).statuses[0].limit_remaining == 0


@pytest.mark.parametrize("hits", [2**40, 2**64 - 1])
async def test_a_huge_hits_addend_is_over_the_limit_with_a_sane_duration(
        rls: object, hits: int) -> None:
    stub = rls  # type: ignore[assignment]
    reply = await ask(stub, descriptor(("tenant", "a"), hits=hits))
    assert reply.overall_code == Response.OVER_LIMIT
    assert 0 < reply.statuses[0].duration_until_reset.seconds <= 86400  # the unit: a day
    assert (await ask(stub, descriptor(("tenant", "a")))).statuses[0].limit_remaining == 4


async def test_unknown_domain_is_not_limited(rls: object) -> None:
    stub = rls  # type: ignore[assignment]
    reply = await ask(stub, descriptor(("tenant", "a")), domain="nope")
    assert reply.overall_code == Response.OK


def dead_url(port: ReservedPort) -> str:
    return f"redis://127.0.0.1:{port.port}/0"


def store_down_config(quota_config: MakeConfig, tmp_path: Path, url: str, mode: str) -> Config:
    (tmp_path / "edge.yaml").write_text(RATELIMIT_FILE)
    return quota_config(f"  ratelimit_service: {{config_files: ['{tmp_path}/edge.yaml']}}\n"
                        f"  redis: {{url: '{url}', timeout: 100ms}}\n  store: redis\n"
                        f"  failure_mode: {mode}\n")


@pytest.mark.parametrize("mode", ["closed", "open"])
async def test_store_down_answers_unavailable_counted_and_logged_by_the_failure_mode(
        mode: str, tmp_path: Path, quota_config: MakeConfig,
        make_limiter: Callable[[Config], Limiter], caplog: pytest.LogCaptureFixture) -> None:
    # UNAVAILABLE either way: Envoy's failure_mode_deny decides, and the generated bootstrap
    # sets it from quota.failure_mode, so `open` lets the request through: fail_open_total.
    with ReservedPort() as dead:  # nothing listens there, and nothing can start to
        runtime = Snapshot(make_limiter(store_down_config(quota_config, tmp_path,
                                                          dead_url(dead), mode)))
        counters = {"open": quota_metrics.FAIL_OPEN, "closed": quota_metrics.FAIL_CLOSED}
        before = {m: c._value.get() for m, c in counters.items()}
        async with serving(runtime) as stub:
            with caplog.at_level(logging.WARNING, logger="tenantgate.quota"), \
                    pytest.raises(grpc.aio.AioRpcError) as err:
                await ask(stub, descriptor(("tenant", "a")))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert (runtime.pins, runtime.in_flight) == (1, 0)  # pinned, and released on abort
    assert {m: c._value.get() - before[m] for m, c in counters.items()} == {
        m: float(m == mode) for m in counters}
    assert f"failing {mode}" in caplog.text


@pytest.fixture(params=["closed", "open"])
async def store_down(request: pytest.FixtureRequest, tmp_path: Path, quota_config: MakeConfig,
                     make_limiter: Callable[[Config], Limiter]
                     ) -> AsyncIterator[rls_pb2_grpc.RateLimitServiceStub]:
    """ShouldRateLimit on a Redis that never started, under failure_mode closed and open."""
    with ReservedPort() as dead:  # nothing listens there, and nothing can start to
        config = store_down_config(quota_config, tmp_path, dead_url(dead), request.param)
        async with serving(Snapshot(make_limiter(config))) as stub:
            yield stub


async def test_a_zero_limit_is_over_the_limit_while_the_store_is_down(
        store_down: rls_pb2_grpc.RateLimitServiceStub) -> None:
    # `blocked` (0 per unit) never asks the store, `tenant` does and fails: the call was
    # UNAVAILABLE, which Envoy lets through under failure_mode open. One group over the limit
    # decides the call whatever the others could not decide.
    before = rls_requests(quota_metrics.RlsResult.OVER_LIMIT)
    reply = await ask(store_down, descriptor(("blocked", "x")), descriptor(("tenant", "a")),
                      descriptor(("watched", "w")))
    assert reply.overall_code == Response.OVER_LIMIT
    blocked, undecided, shadow = reply.statuses
    assert blocked.code == Response.OVER_LIMIT
    # Undecided: no limit, so Envoy's x-ratelimit-* cannot come from it.
    assert undecided == shadow == Response.DescriptorStatus(code=Response.OK)
    assert rls_requests(quota_metrics.RlsResult.OVER_LIMIT) == before + 1


async def test_a_shadow_limit_whose_store_is_down_never_blocks(
        store_down: rls_pb2_grpc.RateLimitServiceStub, caplog: pytest.LogCaptureFixture
        ) -> None:
    # Under closed, the call was UNAVAILABLE and Envoy answered 503 for a limit that is only
    # watched. Counted as unavailable, and as failing open: the request goes through.
    counters = (quota_metrics.FAIL_OPEN, quota_metrics.FAIL_CLOSED)
    before = [rls_requests(quota_metrics.RlsResult.UNAVAILABLE),
              *(c._value.get() for c in counters)]
    with caplog.at_level(logging.WARNING, logger="tenantgate.quota"):
        reply = await ask(store_down, descriptor(("watched", "w")),
                          descriptor(("generic_key", "health")))
    assert [r.getMessage().split(": ConnectionRefusedError: ")[0] for r in caplog.records] == [
        "quota store redis unavailable (failing open, shadow limits only)"]
    assert reply.overall_code == Response.OK
    assert list(reply.statuses) == [Response.DescriptorStatus(code=Response.OK)] * 2
    after = [rls_requests(quota_metrics.RlsResult.UNAVAILABLE),
             *(c._value.get() for c in counters)]
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 0]


def fail_counts() -> dict[str, float]:
    return {"open": quota_metrics.FAIL_OPEN._value.get(),
            "closed": quota_metrics.FAIL_CLOSED._value.get()}


def counted_since(before: dict[str, float]) -> dict[str, float]:
    return {mode: value - before[mode] for mode, value in fail_counts().items()}


@pytest.mark.parametrize("mode", ["closed", "open"])
async def test_an_enforced_and_a_shadow_limit_undecided_fail_once_by_the_mode(
        mode: str, tmp_path: Path, quota_config: MakeConfig,
        make_limiter: Callable[[Config], Limiter], caplog: pytest.LogCaptureFixture) -> None:
    # One call, one count, one warning, all saying what Envoy does with the UNAVAILABLE: under
    # closed the shadow group's "failing open" was the warning while the request got 503, and
    # the call counted as failing open and closed.
    with ReservedPort() as dead:  # nothing listens there, and nothing can start to
        config = store_down_config(quota_config, tmp_path, dead_url(dead), mode)
        before = fail_counts()
        async with serving(Snapshot(make_limiter(config))) as stub:
            with caplog.at_level(logging.WARNING, logger="tenantgate.quota"), \
                    pytest.raises(grpc.aio.AioRpcError) as err:
                await ask(stub, descriptor(("watched", "w")), descriptor(("tenant", "a")))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert counted_since(before) == {m: float(m == mode) for m in ("open", "closed")}
        # The warning says why the store failed: nothing listens at its port.
        assert [r.getMessage().split(": ConnectionRefusedError: ")[0]
                for r in caplog.records] == [f"quota store redis unavailable (failing {mode})"]


async def test_an_over_limit_answer_is_not_counted_as_failing_open_or_closed(
        store_down: rls_pb2_grpc.RateLimitServiceStub, caplog: pytest.LogCaptureFixture
        ) -> None:
    # A 429: Envoy neither lets the request through nor answers 503, whatever the store did.
    before = fail_counts()
    with caplog.at_level(logging.WARNING, logger="tenantgate.quota"):
        reply = await ask(store_down, descriptor(("blocked", "x")), descriptor(("tenant", "a")),
                          descriptor(("watched", "w")))
    assert reply.overall_code == Response.OVER_LIMIT
    assert counted_since(before) == {"open": 0, "closed": 0}
    assert "failing" not in caplog.text


async def test_a_cached_denial_is_over_the_limit_while_the_store_is_down(
        tmp_path: Path, quota_config: MakeConfig,
        make_limiter: Callable[[Config], Limiter]) -> None:
    server = RedisServer().start()
    try:
        config = store_down_config(quota_config, tmp_path, server.url, "open")
        async with serving(Snapshot(make_limiter(config))) as stub:
            route = descriptor(("route", "/api/items"))
            codes = [(await ask(stub, route)).overall_code for _ in range(4)]
            assert codes == [Response.OK] * 3 + [Response.OVER_LIMIT]  # now in the cache
            server.stop()
            with pytest.raises(grpc.aio.AioRpcError) as err:  # nothing over: Envoy decides
                await ask(stub, descriptor(("tenant", "a")))
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            reply = await ask(stub, route, descriptor(("tenant", "a")))
        assert [s.code for s in reply.statuses] == [Response.OVER_LIMIT, Response.OK]
        assert reply.statuses[0].duration_until_reset.seconds > 0
    finally:
        server.close()


async def test_a_cached_denial_says_what_remains_as_the_store_did(rls: object) -> None:
    # A cost above what is left is refused with 4 left; the over-limit cache answering the
    # same request again said 0.
    stub = rls  # type: ignore[assignment]
    assert (await ask(stub, descriptor(("tenant", "a")))).statuses[0].limit_remaining == 4
    from_store, from_cache = [await ask(stub, descriptor(("tenant", "a"), hits=6))
                              for _ in range(2)]
    for reply in (from_store, from_cache):
        assert reply.overall_code == Response.OVER_LIMIT
        assert reply.statuses[0].limit_remaining == 4


async def test_a_cached_denial_reports_the_descriptor_that_is_out(rls: object) -> None:
    # Envoy's x-ratelimit headers follow the status with least remaining: when the over-limit
    # cache answers, the tenant bucket (3 left) must not look as empty as the writes one.
    stub = rls  # type: ignore[assignment]
    tenant, writes = descriptor(("tenant", "a")), descriptor(("tenant", "a"), ("method", "POST"))
    for _ in range(2):
        assert (await ask(stub, tenant, writes)).overall_code == Response.OK
    from_store, from_cache = [await ask(stub, tenant, writes) for _ in range(2)]
    for reply in (from_store, from_cache):
        assert reply.overall_code == Response.OVER_LIMIT
        assert reply.statuses[0].limit_remaining > 0
        assert reply.statuses[1].limit_remaining == 0
        assert reply.statuses[1].duration_until_reset.seconds > 0


async def test_a_subsecond_wait_says_one_second(
        tmp_path: Path, quota_config: MakeConfig, make_limiter: Callable[[Config], Limiter],
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Envoy copies only duration_until_reset's whole seconds into x-ratelimit-reset, and the
    # bootstrap that into Retry-After: 100 ms sent as is would tell clients "retry now". The
    # embedded store's clock is frozen here, so the wait is exactly 100 ms.
    monkeypatch.setattr("tenantgate.quota.memory.monotonic_us", lambda: 10**12)
    monkeypatch.setattr("tenantgate.quota.limiter.monotonic_us", lambda: 10**12)
    (tmp_path / "edge.yaml").write_text(RATELIMIT_FILE)
    config = quota_config(f"  ratelimit_service: {{config_files: ['{tmp_path}/edge.yaml']}}\n")
    async with serving(Snapshot(make_limiter(config))) as stub:
        client = descriptor(("client", "c"))
        admitted = await ask(stub, client, hits=10)
        from_store, from_cache = [await ask(stub, client) for _ in range(2)]
    assert admitted.statuses[0].duration_until_reset == Duration(seconds=1)  # until full
    for reply in (from_store, from_cache):
        assert reply.overall_code == Response.OVER_LIMIT
        assert reply.statuses[0].duration_until_reset == Duration(seconds=1)


async def test_every_status_of_a_denial_says_whole_seconds_never_0(
        tmp_path: Path, quota_config: MakeConfig, make_limiter: Callable[[Config], Limiter],
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Envoy takes x-ratelimit-reset (and the bootstrap's Retry-After) from the status with least
    # remaining, an admitted one included, and copies only its whole seconds: an admitted
    # `client` status with 0 left and 0.95 s to full made a 429 say Retry-After: 0.
    now = [10**12]
    monkeypatch.setattr("tenantgate.quota.memory.monotonic_us", lambda: now[0])
    monkeypatch.setattr("tenantgate.quota.limiter.monotonic_us", lambda: now[0])
    (tmp_path / "edge.yaml").write_text(RATELIMIT_FILE)
    config = quota_config(f"  ratelimit_service: {{config_files: ['{tmp_path}/edge.yaml']}}\n")
    async with serving(Snapshot(make_limiter(config))) as stub:
        client = descriptor(("client", "c"))
        partly = await ask(stub, client, hits=9)  # 1 left, full again in 0.9 s
        now[0] += 50_000
        await ask(stub, client)  # 0.95 s
        now[0] += 100_000
        denied = await ask(stub, client, descriptor(("blocked", "x")))  # 0 left, 0.95 s
    assert partly.statuses[0].duration_until_reset == Duration(seconds=1)
    assert denied.overall_code == Response.OVER_LIMIT
    admitted, blocked = denied.statuses
    assert (admitted.code, admitted.limit_remaining) == (Response.OK, 0)
    assert admitted.duration_until_reset == Duration(seconds=1)
    assert blocked.duration_until_reset == Duration(seconds=60)


async def test_a_huge_cost_in_a_group_with_a_yearly_bucket_says_a_year_on_every_store(
        rls: object) -> None:
    # One group: a 1/year bucket and a 4294967295/s one. Capped at the largest burst + 1, the
    # cost times the yearly interval overflowed Redis' integers (retry 0, nothing cached)
    # while the embedded store said 10000 years. The smallest bucket's burst + 1 decides alike.
    stub = rls  # type: ignore[assignment]
    yearly, op = descriptor(("yearly", "a")), descriptor(("yearly", "a"), ("op", "x"))
    for _ in range(2):  # from the store, then from the over-limit cache
        reply = await ask(stub, yearly, op, hits=2**32 - 1)
        assert [s.code for s in reply.statuses] == [Response.OVER_LIMIT] * 2
        assert reply.statuses[0].duration_until_reset == Duration(seconds=YEAR)
        assert reply.statuses[1].duration_until_reset == Duration(seconds=1)
    assert (await ask(stub, yearly)).statuses[0].limit_remaining == 0  # charged now, not before


def long_text(nbytes: int) -> str:
    return "é" * (nbytes // 2) + "x" * (nbytes % 2)  # bytes, not characters, are counted


@pytest.mark.parametrize(("descriptors", "problem"), [
    ([descriptor(("tenant", "a"))] * (MAX_DESCRIPTORS + 1),
     f"more than {MAX_DESCRIPTORS} descriptors"),
    ([descriptor(*[("tenant", "a")] * (MAX_ENTRIES + 1))],
     f"a descriptor has more than {MAX_ENTRIES} entries"),
    # Keys come from Envoy's config; a long value is answered (test_rls_long_values.py).
    ([descriptor(("tenant", "a"), (long_text(MAX_ENTRY_BYTES + 1), "v"))],
     f"a descriptor key is longer than {MAX_ENTRY_BYTES} bytes"),
], ids=["descriptors", "entries", "key_bytes"])
async def test_an_oversized_request_is_refused_counted_logged_and_charges_nothing(
        rls: object, descriptors: list[RateLimitDescriptor], problem: str,
        caplog: pytest.LogCaptureFixture) -> None:
    # One call of 100k descriptors held the event loop for seconds, failed other callers'
    # Redis calls and pushed other tenants' buckets out of the embedded store.
    stub = rls  # type: ignore[assignment]
    before = rls_requests(quota_metrics.RlsResult.INVALID)
    with caplog.at_level(logging.WARNING, logger="tenantgate.quota"), \
            pytest.raises(grpc.aio.AioRpcError) as err:
        await ask(stub, *descriptors)
    assert (err.value.code(), err.value.details()) == (grpc.StatusCode.INVALID_ARGUMENT, problem)
    assert rls_requests(quota_metrics.RlsResult.INVALID) == before + 1
    assert f"ShouldRateLimit refused (domain edge): {problem}" in caplog.text
    assert (await ask(stub, descriptor(("tenant", "a")))).statuses[0].limit_remaining == 4


async def test_a_request_at_the_bounds_is_answered(rls: object) -> None:
    stub = rls  # type: ignore[assignment]
    at_bounds = [descriptor(("tenant", long_text(MAX_ENTRY_BYTES)),
                            *[("k", "v")] * (MAX_ENTRIES - 1))] * MAX_DESCRIPTORS
    reply = await ask(stub, *at_bounds)
    assert reply.overall_code == Response.OK and len(reply.statuses) == MAX_DESCRIPTORS
