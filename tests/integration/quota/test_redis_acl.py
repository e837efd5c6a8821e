"""The least-privilege Redis ACL docs/quota.md gives for the quota alone is enough: exact and
batched decisions and ShouldRateLimit, with the script cache empty (so SCRIPT LOAD runs), on
the wheel's redis-server (6.2) and the system's (7.x) where there is one."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import redis
from envoy.extensions.common.ratelimit.v3.ratelimit_pb2 import RateLimitDescriptor
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from tenantgate.config.load import parse_config
from tenantgate.quota.limiter import Limiter
from tenantgate.quota.redis import RedisStore
from tenantgate.quota.rls import add_to_server
from tenantgate.testing.binaries import BinaryMissing, redis_server_binary
from tenantgate.testing.redis import RedisServer

# As docs/quota.md, "Redis permissions", gives it for the quota alone: tg:* keys are the
# plans' buckets, rl:* ShouldRateLimit's.
QUOTA_ACL = ["~tg:*", "~rl:*", "resetchannels", "+evalsha", "+script|load", "+time", "+get", "+set"]
PASSWORD = "acl-test-password"


def _binaries() -> list[str]:
    found = [redis_server_binary(), shutil.which("redis-server", path="/usr/bin:/usr/local/bin")]
    return list(dict.fromkeys(b for b in found if b)) or ["missing"]


@pytest.fixture(params=_binaries())
def restricted(request: pytest.FixtureRequest) -> Iterator[str]:
    """A redis-server with a user allowed only QUOTA_ACL; its URL."""
    if request.param == "missing":
        pytest.skip("redis-server not found")
    server = RedisServer(binary=request.param)
    try:
        server.start()
    except BinaryMissing as exc:
        pytest.skip(str(exc))
    with redis.Redis(port=server.port) as admin:
        admin.execute_command("ACL", "SETUSER", "tg-quota", "reset", "on", f">{PASSWORD}",
                              *QUOTA_ACL)
    yield f"redis://tg-quota:{PASSWORD}@127.0.0.1:{server.port}/0"
    server.close()


def _limiter(url: str, tmp_path: Path) -> Limiter:
    (tmp_path / "edge.yaml").write_text(
        "domain: edge\ndescriptors:\n  - key: tenant\n"
        "    rate_limit: {unit: day, requests_per_unit: 2}\n")
    config = parse_config(f"""
context:
  active_key: k1
  keys: [{{id: k1, secret: {{fromEnv: TG_QUOTA_TEST_SECRET}}}}]
quota:
  enabled: true
  store: redis
  redis: {{url: '{url}', timeout: 2s}}
  default_plan: exact
  plans:
    exact: {{limits: ['2/day']}}
    batched: {{limits: ['2/day'], mode: batched, batch_interval: 1s}}
  ratelimit_service: {{config_files: ['{tmp_path}/edge.yaml']}}
tenants:
  registry:
    bulk: {{plan: batched}}
""")
    store = RedisStore(config.quota.redis)
    return Limiter(config, store, store.close)


async def _decisions(limiter: Limiter, tenant: str) -> list[bool]:
    plan = limiter.plan_for(tenant, None, False)
    assert plan is not None
    verdicts = [await limiter.check(plan, tenant, "GET", "/") for _ in range(3)]
    assert not any(v.unavailable for v in verdicts)
    return [v.admitted for v in verdicts]


async def _should_rate_limit(limiter: Limiter) -> list[int]:
    class Snapshot:  # what ShouldRateLimit uses of a Runtime
        def __init__(self) -> None:
            self.limiter = limiter

        def pin(self) -> Snapshot:
            return self

        def unpin(self) -> None:
            pass

    server = grpc.aio.server()
    add_to_server(server, Snapshot)  # type: ignore[arg-type]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = rls_pb2_grpc.RateLimitServiceStub(channel)
            request = rls_pb2.RateLimitRequest(domain="edge", descriptors=[RateLimitDescriptor(
                entries=[RateLimitDescriptor.Entry(key="tenant", value="a")])])
            return [(await stub.ShouldRateLimit(request)).overall_code for _ in range(3)]
    finally:
        await server.stop(None)


async def test_the_documented_quota_acl_is_enough(
        restricted: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TG_QUOTA_TEST_SECRET", "x" * 40)
    limiter = _limiter(restricted, tmp_path)
    try:
        await limiter.start()
        assert await _decisions(limiter, "acme") == [True, True, False]  # exact: EVALSHA
        assert (await _decisions(limiter, "bulk"))[:2] == [True, True]  # batched
        store = limiter.store
        assert isinstance(store, RedisStore)
        with redis.Redis(port=int(restricted.rsplit(":", 1)[1].split("/")[0])) as admin:
            admin.script_flush()  # the batched sync loads its script again: SCRIPT LOAD
        tats, _ = await store.charge([(b, 1, 2**53) for b in limiter.plans["batched"].buckets(
            "bulk", "GET", "/")])
        assert all(t is not None for t in tats)
        ok, over = rls_pb2.RateLimitResponse.OK, rls_pb2.RateLimitResponse.OVER_LIMIT
        assert await _should_rate_limit(limiter) == [ok, ok, over]
    finally:
        await limiter.close()
