"""Batched mode's sync against a real Redis: a failed sync charges its hits later, never
drops them; charges count from their floor; one failed charge does not fail the others."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator

import pytest
import redis
from redis.cluster import key_slot
from tenantgate.config.model import Config
from tenantgate.errors import QuotaStoreUnavailable
from tenantgate.quota.batched import Batcher
from tenantgate.quota.limiter import Limiter
from tenantgate.quota.memory import MemoryStore
from tenantgate.quota.redis import RedisStore
from tenantgate.quota.store import Bucket
from tenantgate.testing.redis import RedisClusterServers, RedisServer

MakeConfig = Callable[..., Config]
BATCHED = """  default_plan: p
  plans:
    p: {limits: ['100/s'], mode: batched, batch_interval: 1s}
"""
KEY = "tg:{t:acme}:plan:1"


@pytest.fixture
def killable() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.close()


async def admitted_locally(limiter: Limiter, n: int) -> Batcher:
    """`n` Checks for acme (the first exact, the rest from the mirror); the batcher."""
    plan = limiter.plan_for("acme", None, False)
    assert plan is not None and limiter._batcher is not None
    assert all([(await limiter.check(plan, "acme", "GET", "/")).admitted for _ in range(n)])
    return limiter._batcher


def stored(server: RedisServer) -> int | None:
    with redis.Redis(port=server.port) as client:
        value = client.get(KEY)
    return int(value) if value is not None else None


def redis_now(server: RedisServer) -> int:
    with redis.Redis(port=server.port) as client:
        seconds, micros = client.time()
    return seconds * 1_000_000 + micros


async def test_a_sync_refused_by_the_open_circuit_charges_its_hits_at_the_next(
        fresh_redis: RedisServer, make_limiter: Callable[[Config], Limiter],
        quota_config: MakeConfig) -> None:
    # The open circuit sent nothing, yet the pending hits were dropped: right after it
    # closed, a full allowance more was admitted.
    limiter = make_limiter(quota_config(BATCHED, fresh_redis.url))
    await limiter.start()
    batcher = await admitted_locally(limiter, 50)
    mirror = batcher._mirrors[KEY]
    pending, floor, before = mirror.pending, mirror.floor(), stored(fresh_redis)
    assert pending == 49 and before is not None
    assert isinstance(limiter.store, RedisStore)
    for _ in range(5):
        limiter.store.breaker.failure()
    with pytest.raises(QuotaStoreUnavailable, match="circuit open"):
        await batcher.sync()
    assert mirror.pending == pending
    limiter.store.breaker.success()
    await batcher.sync()
    # Counted from where they were admitted (before the refused sync), each once.
    assert stored(fresh_redis) == max(before, floor) + pending * 10_000


async def test_a_sync_that_found_redis_down_charges_its_hits_when_it_is_back(
        killable: RedisServer, make_limiter: Callable[[Config], Limiter],
        quota_config: MakeConfig) -> None:
    limiter = make_limiter(quota_config(BATCHED, killable.url))
    await limiter.start()
    batcher = await admitted_locally(limiter, 30)
    pending, floor = batcher._mirrors[KEY].pending, batcher._mirrors[KEY].floor()
    killable.stop()
    with pytest.raises(QuotaStoreUnavailable):
        await batcher.sync()  # connection refused
    killable.start()  # same port, empty, without the scripts
    before = redis_now(killable)
    await batcher.sync()
    # Counted from their floor (the store lost the bucket), which is at most Redis' now.
    lo, hi = (min(floor, t) + pending * 10_000 for t in (before, redis_now(killable)))
    assert lo <= (stored(killable) or 0) <= hi


async def test_a_charge_refused_alone_leaves_the_others_made(
        fresh_redis: RedisServer, quota_config: MakeConfig) -> None:
    # One error reply failed the whole sync: the charges made were sent again next time.
    store = RedisStore(quota_config("", fresh_redis.url).quota.redis)
    good, bad = (Bucket(f"tg:{{t:{t}}}:plan:86400", "d", 10, 86400.0, 10) for t in "ab")
    with redis.Redis(port=fresh_redis.port) as client:
        client.lpush(bad.key, "not a bucket")  # GET answers WRONGTYPE
    try:
        [_], now = await store.charge([(good, 0, 0)])
        tats, _ = await store.charge([(good, 2, now), (bad, 2, now)])
        assert tats[1] is None
        assert tats[0] is not None and tats[0] >= now + 2 * good.interval_us
        assert store.breaker.allow()  # Redis answered: not an outage
    finally:
        await store.close()


async def test_a_charge_counts_its_hits_from_the_floor_never_past_now(
        store_url: str | None, quota_config: MakeConfig) -> None:
    store = (MemoryStore() if store_url is None
             else RedisStore(quota_config("", store_url).quota.redis))
    day = Bucket("tg:{t:acme}:plan:86400", "d", 864, 86400.0, 864)  # 100 s a hit
    second = Bucket("tg:{t:acme}:plan:1", "s", 100, 1.0, 100)  # 10 ms a hit
    try:
        [_], now = await store.charge([(day, 0, 0)])  # the store's clock
        # 10 hits of 10 ms admitted from 1 s ago: full again by now, nothing kept.
        [tat], _ = await store.charge([(second, 10, now - 1_000_000)])
        assert tat == now - 900_000
        [held], _ = await store.charge([(second, 0, 0)])
        assert held == 0  # no key: full
        # A floor past the store's clock (a clock estimate off) counts from its now.
        [tat], at = await store.charge([(day, 1, now + 3_600_000_000)])
        assert tat == at + day.interval_us
    finally:
        await store.close()


async def test_on_cluster_a_hung_node_fails_only_its_own_charges(
        redis_cluster: RedisClusterServers, make_limiter: Callable[[Config], Limiter],
        quota_config: MakeConfig) -> None:
    # The charges went out concurrently under one timeout: a node that hangs (no reset, so
    # no quick refusal) timed the whole sync out although its peers had made theirs, and
    # those were made again at every sync for as long as it hung.
    limiter = make_limiter(quota_config("""  default_plan: p
  plans:
    p: {limits: ['1000/d'], mode: batched, batch_interval: 1s}
""", redis_cluster.url))
    await limiter.start()
    tenants = [f"hung-node-{i}" for i in range(12)]
    for tenant in tenants:  # each: one exact decision, then one hit pending from the mirror
        await admitted_on(limiter, tenant, 2)
    batcher = limiter._batcher
    assert batcher is not None
    hung = redis_cluster.nodes[2]
    assert hung.pid is not None
    os.kill(hung.pid, signal.SIGSTOP)
    try:
        for _ in range(3):
            with contextlib.suppress(QuotaStoreUnavailable):
                await batcher.sync()
    finally:
        os.kill(hung.pid, signal.SIGCONT)
    client = redis.RedisCluster(host="127.0.0.1", port=redis_cluster.nodes[0].port)
    try:
        seconds, micros = client.time(target_nodes=client.get_primaries()[0])
        now, interval = seconds * 1_000_000 + micros, 86_400_000_000 // 1000
        healthy = {t: int(client.get(f"tg:{{t:{t}}}:plan:86400"))
                   for t in tenants if _slot_node(f"tg:{{t:{t}}}:plan:86400") != 2}
    finally:
        client.close()
    assert healthy  # some tenants live on the healthy nodes
    assert {t: round((tat - now) / interval) for t, tat in healthy.items()} == {
        t: 2 for t in healthy}  # admitted twice, charged twice: never again


def _slot_node(key: str) -> int:
    """Which of the three test nodes serves the key (RedisClusterServers splits the slots
    evenly, in order)."""
    return min(key_slot(key.encode()) // (16384 // 3), 2)


async def admitted_on(limiter: Limiter, tenant: str, n: int) -> None:
    plan = limiter.plan_for(tenant, None, False)
    assert plan is not None
    assert all([(await limiter.check(plan, tenant, "GET", "/")).admitted for _ in range(n)])
