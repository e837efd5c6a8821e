"""ShouldRateLimit with descriptor values over MAX_ENTRY_BYTES: limited like any other value,
never refused (a refusal is a service error, and Envoy's failure mode would decide)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TypeAlias

import grpc
import pytest
import redis
from envoy.extensions.common.ratelimit.v3.ratelimit_pb2 import RateLimitDescriptor
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from tenantgate.config.model import Config
from tenantgate.observe import quota as quota_metrics
from tenantgate.quota.limiter import Limiter
from tenantgate.quota.rls import MAX_ENTRY_BYTES, add_to_server
from tenantgate.testing.redis import RedisServer

Response = rls_pb2.RateLimitResponse
Stub: TypeAlias = rls_pb2_grpc.RateLimitServiceStub

RATELIMIT_FILE = """
domain: edge
descriptors:
  - key: tenant
    rate_limit: {unit: day, requests_per_unit: 3}
    descriptors:
      - key: path
        rate_limit: {unit: day, requests_per_unit: 1}
  - key: route
    value: "/api/*"
    rate_limit: {unit: day, requests_per_unit: 1}
"""
LONG_QUERY = "?q=" + "x" * (MAX_ENTRY_BYTES + 100)  # the 1.1 KB a client appends to a path


class Snapshot:
    def __init__(self, limiter: Limiter) -> None:
        self.limiter = limiter

    def pin(self) -> Snapshot:
        return self

    def unpin(self) -> None:
        pass


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, quota_config: Callable[..., Config],
                  make_limiter: Callable[[Config], Limiter], url: str | None
                  ) -> AsyncIterator[Stub]:
    (tmp_path / "edge.yaml").write_text(RATELIMIT_FILE)
    limiter = make_limiter(quota_config(
        f"  ratelimit_service: {{config_files: ['{tmp_path}/edge.yaml']}}\n", url))
    await limiter.start()
    server = grpc.aio.server()
    add_to_server(server, lambda: Snapshot(limiter))  # type: ignore[arg-type, return-value]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield Stub(channel)
    finally:
        await server.stop(None)


@pytest.fixture(params=["memory", "redis"])
async def stub(request: pytest.FixtureRequest, tmp_path: Path,
               quota_config: Callable[..., Config],
               make_limiter: Callable[[Config], Limiter]) -> AsyncIterator[Stub]:
    url = request.getfixturevalue("fresh_redis").url if request.param == "redis" else None
    async with serving(tmp_path, quota_config, make_limiter, url) as served:
        yield served


def descriptor(*entries: tuple[str, str]) -> RateLimitDescriptor:
    return RateLimitDescriptor(entries=[RateLimitDescriptor.Entry(key=k, value=v)
                                        for k, v in entries])


async def ask(stub: Stub, *descriptors: RateLimitDescriptor) -> list[int]:
    reply = await stub.ShouldRateLimit(rls_pb2.RateLimitRequest(
        domain="edge", descriptors=list(descriptors)))
    return [status.code for status in reply.statuses]


def invalid_requests() -> float:
    return quota_metrics.RLS_REQUESTS.labels("edge", "invalid")._value.get()


async def test_a_long_query_string_does_not_dodge_the_tenant_or_path_limit(
        stub: Stub) -> None:
    # Before: INVALID_ARGUMENT for the whole call; with failure_mode open Envoy let it through
    # uncounted, every limit of the tenant's included.
    invalid = invalid_requests()
    tenant, path = ("tenant", "a"), ("path", "/reports/x" + LONG_QUERY)
    both = [descriptor(tenant), descriptor(tenant, path)]
    assert await ask(stub, *both) == [Response.OK] * 2
    # The same long value is the same bucket: over its 1 a day (one tenant's descriptors are
    # decided together, so the tenant's is refused with it and neither is charged).
    assert await ask(stub, *both) == [Response.OVER_LIMIT] * 2
    other = ("path", "/reports/x" + LONG_QUERY + "y")  # differs past the first 1024 bytes
    assert await ask(stub, descriptor(tenant), descriptor(tenant, other)) == [Response.OK] * 2
    assert [await ask(stub, descriptor(tenant)) for _ in range(2)] == [
        [Response.OK], [Response.OVER_LIMIT]]  # 3 a day: each long-path call counted
    assert invalid_requests() == invalid


async def test_a_long_value_matches_prefix_rules_and_tenant_tags(stub: Stub) -> None:
    route = descriptor(("route", "/api/items" + LONG_QUERY))
    assert [await ask(stub, route) for _ in range(2)] == [[Response.OK], [Response.OVER_LIMIT]]
    tenant = descriptor(("tenant", "t" * (MAX_ENTRY_BYTES + 1)))
    assert [await ask(stub, tenant) for _ in range(4)] == [[Response.OK]] * 3 + [
        [Response.OVER_LIMIT]]


async def test_redis_keys_stay_bounded_whatever_the_value_length(
        tmp_path: Path, quota_config: Callable[..., Config],
        make_limiter: Callable[[Config], Limiter], fresh_redis: RedisServer) -> None:
    tenant = ("tenant", "é" * MAX_ENTRY_BYTES)  # 2048 bytes, in the hash tag too
    async with serving(tmp_path, quota_config, make_limiter, fresh_redis.url) as stub:
        path = descriptor(tenant, ("path", "/" + "p" * 100_000))
        assert await ask(stub, descriptor(tenant), path) == [Response.OK] * 2
    with redis.Redis(port=fresh_redis.port) as client:
        keys = client.keys("*")
    assert len(keys) == 2
    assert max(len(key) for key in keys) < 300  # escaped, the tenant alone is 6 KB
