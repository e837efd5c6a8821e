"""Redis killed mid-run: each failure mode behaves as configured, nothing hangs, and limiting
resumes by itself when Redis comes back."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from tenantgate.config.model import Config
from tenantgate.quota.limiter import Limiter, Verdict
from tenantgate.testing.ports import ReservedPort
from tenantgate.testing.redis import RedisServer

MakeConfig = Callable[..., Config]
# Generous bound: far above the 100 ms store timeout, far below "hangs". Not a speed claim.
NO_HANG = 5.0


def plan(mode: str) -> str:
    return f"""  default_plan: free
  failure_mode: {mode}
  replicas: 2
  plans:
    free: {{limits: [{{rate: '4/day', burst: 4}}]}}
  redis: {{url: URL, timeout: 100ms, circuit: {{failures: 2, open_for: 200ms}}}}
"""


async def run(limiter: Limiter, n: int, tenant: str = "acme") -> list[Verdict]:
    compiled = limiter.plan_for(tenant, None, False)
    assert compiled is not None
    return [await asyncio.wait_for(limiter.check(compiled, tenant, "GET", "/"), NO_HANG)
            for _ in range(n)]


async def limiter_for(mode: str, make_limiter: Callable[[Config], Limiter],
                      quota_config: MakeConfig, server: RedisServer) -> Limiter:
    config = quota_config(plan(mode).replace("URL", f"'{server.url}'") + "  store: redis\n")
    limiter = make_limiter(config)
    await limiter.start()
    return limiter


@pytest.fixture
def killable() -> RedisServer:
    server = RedisServer().start()
    yield server  # type: ignore[misc]
    server.close()


@pytest.mark.parametrize(("mode", "while_down"), [
    ("open", [True] * 6),  # everything passes, counted as fail-open
    ("closed", [None] * 6),  # 503 for everyone
    ("degraded", [True, True, False, False, False, False]),  # burst 4 / 2 replicas = 2 here
])
async def test_redis_killed_mid_run_then_back(
        mode: str, while_down: list[bool | None], killable: RedisServer,
        make_limiter: Callable[[Config], Limiter], quota_config: MakeConfig) -> None:
    limiter = await limiter_for(mode, make_limiter, quota_config, killable)
    assert [v.admitted for v in await run(limiter, 3)] == [True] * 3

    killable.stop()
    down = await run(limiter, 6)
    assert [None if v.unavailable else v.admitted for v in down] == while_down

    killable.start()  # same port, empty: the scripts are gone too (NOSCRIPT path)
    await asyncio.sleep(0.3)  # the breaker's open_for, then one probe closes it
    back = await run(limiter, 6)
    assert [v.admitted for v in back] == [True] * 4 + [False] * 2
    assert all(v.outcome is not None for v in back)  # decided by Redis again


async def test_redis_down_at_start_is_not_fatal(
        make_limiter: Callable[[Config], Limiter], quota_config: MakeConfig) -> None:
    reserved = ReservedPort()  # nothing listens on it, and nobody else can take it
    dead = RedisServer(port=reserved.port)  # pinned: it comes up where the limiter looks
    try:
        limiter = await limiter_for("closed", make_limiter, quota_config, dead)
        assert [v.unavailable for v in await run(limiter, 2)] == [True, True]
        reserved.release()
        dead.start()
        assert dead.port == reserved.port
        await asyncio.sleep(0.3)
        assert [v.admitted for v in await run(limiter, 5)] == [True] * 4 + [False]
    finally:
        reserved.release()
        dead.close()


async def test_redis_cluster_down_is_the_failure_mode_not_a_crash(
        make_limiter: Callable[[Config], Limiter], quota_config: MakeConfig) -> None:
    # redis-py raises RedisClusterException (not a RedisError) when no node answers: it
    # failed start-up and every Check with an untyped error instead of failing closed.
    with ReservedPort() as one, ReservedPort() as two:  # nothing listens on either
        url = f"redis+cluster://127.0.0.1:{one.port},127.0.0.1:{two.port}"
        config = quota_config(plan("closed").replace("URL", f"'{url}'") + "  store: redis\n")
        limiter = make_limiter(config)
        await limiter.start()
        assert [v.unavailable for v in await run(limiter, 3)] == [True] * 3


async def test_error_replies_count_as_store_errors_and_open_the_circuit(
        killable: RedisServer) -> None:
    """Redis answering every script with an error (OOM here; READONLY after a failover takes the
    same path) is an outage: it was neither counted nor seen by the breaker."""
    import redis as syncredis
    from tenantgate.config.quota import RedisConfig
    from tenantgate.errors import QuotaStoreUnavailable
    from tenantgate.observe import quota as metrics
    from tenantgate.quota.redis import RedisStore
    from tenantgate.quota.store import Bucket

    store = RedisStore(RedisConfig(url=killable.url, circuit={"failures": 3, "open_for": "1h"}))
    await store.start()
    try:
        bucket = Bucket("tg:{t:acme}:plan:86400", "free-86400s", 10, 86400.0, 10)
        assert (await store.acquire([bucket])).admitted
        with syncredis.Redis.from_url(killable.url) as admin:
            admin.config_set("maxmemory-policy", "noeviction")
            admin.config_set("maxmemory", "1")
        errors = metrics.STORE_ERRORS.labels("redis")._value.get()
        failures = []
        for _ in range(5):
            with pytest.raises(QuotaStoreUnavailable) as raised:
                await store.acquire([bucket])
            failures.append(str(raised.value))
        assert metrics.STORE_ERRORS.labels("redis")._value.get() - errors == 3
        # The open circuit's failures still say why it opened.
        assert failures[3:] == [f"circuit open; last error {failures[2]}"] * 2
        assert failures[2].startswith("ResponseError: ERR Error running script")
        assert "-OOM command not allowed" in failures[2]
    finally:
        await store.close()
