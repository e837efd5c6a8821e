"""A bucket's tat is absolute (Redis TIME) and the scripts keep it as stored, however far ahead.

Far ahead is what batched replicas leave: hits each admitted locally on a full bucket are
charged on top, and the bucket pays that debt back (docs/quota.md, the over-admission bound).
It is also what every bucket used lately looks like after Redis' wall clock was stepped back
(the clock of a throwaway redis-server cannot be stepped here: a tat written ahead stands in).
Cutting such a tat forgave the replicas' debt, and batched over-admission accumulated.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import redis
from tenantgate.config.model import Config
from tenantgate.quota.limiter import Limiter
from tenantgate.quota.redis import RedisStore
from tenantgate.quota.store import Bucket
from tenantgate.testing.redis import RedisServer

HOUR_US = 3600 * 1_000_000
MINUTE = Bucket("tg:{t:acme}:plan:60", "free-60s", 60, 60.0, 10)  # 1 s apart, burst 10
KEY = "tg:{t:acme}:plan:1"
# 10/s, burst 10 (one full refill: 1 s); a sync only when the test asks for it.
BATCHED = """  default_plan: p
  plans:
    p: {limits: ['10/s'], mode: batched, batch_interval: 1s}
"""
EXACT = """  default_plan: p
  plans:
    p: {limits: [{rate: '100/s', burst: 1}]}
"""
JUDGE = """  default_plan: p
  plans:
    p: {limits: ['10/s']}
"""


@pytest.fixture
async def store(fresh_redis: RedisServer, quota_config: Callable[..., Config]
                ) -> AsyncIterator[RedisStore]:
    store = RedisStore(quota_config("", fresh_redis.url).quota.redis)
    await store.start()
    yield store
    await store.close()


@pytest.fixture
def admin(fresh_redis: RedisServer) -> Iterator[redis.Redis]:
    with redis.Redis(port=fresh_redis.port) as client:
        yield client


def redis_now(admin: redis.Redis) -> int:
    seconds, micros = admin.time()
    return seconds * 1_000_000 + micros


def store_tat(admin: redis.Redis, key: str, ahead_us: int) -> int:
    """Stores the bucket's tat `ahead_us` past Redis' now, expiring as the scripts set it."""
    tat = redis_now(admin) + ahead_us
    admin.set(key, tat, px=ahead_us // 1000 + 1000)
    return tat


async def test_what_batched_replicas_put_past_full_is_kept_however_far(
        store: RedisStore, admin: redis.Redis) -> None:
    # One and a half refills past full (25 s ahead): 744efdb cut it to two tolerances (20 s),
    # stored the cut, and charged on from there, forgiving 5 s of admitted hits.
    tat = store_tat(admin, MINUTE.key, MINUTE.tolerance_us + MINUTE.tolerance_us * 3 // 2)
    refused = await store.acquire([MINUTE], 1)
    assert not refused.admitted
    state = refused.states[0]
    assert state.reset_us == tat - refused.now_us
    assert state.retry_us == tat + MINUTE.interval_us - MINUTE.tolerance_us - refused.now_us
    assert int(admin.get(MINUTE.key)) == tat  # a refusal stores nothing
    tats, _ = await store.charge([(MINUTE, 2, redis_now(admin))])
    assert tats[0] == tat + 2 * MINUTE.interval_us
    assert int(admin.get(MINUTE.key)) == tat + 2 * MINUTE.interval_us


async def test_three_batched_replicas_debt_is_paid_back_in_full(
        fresh_redis: RedisServer, admin: redis.Redis,
        make_limiter: Callable[[Config], Limiter], quota_config: Callable[..., Config]) -> None:
    # Three replicas each admit what their mirror of the full bucket allows before a sync:
    # 10 + 9 + 8 hits on a burst of 10. The sync leaves the bucket about 1.7 refills past
    # full; the next decision must see all of it.
    replicas = [make_limiter(quota_config(BATCHED, fresh_redis.url)) for _ in range(3)]
    admitted = 0
    for limiter in replicas:
        await limiter.store.start()  # no background sync: each charges when told below
        plan = limiter.plan_for("acme", None, False)
        assert plan is not None
        while (await limiter.check(plan, "acme", "GET", "/")).admitted:
            admitted += 1
    assert admitted > 2 * 10  # more than two bursts admitted before the replicas synced
    for limiter in replicas:
        assert limiter._batcher is not None
        await limiter._batcher.sync()
    tat = int(admin.get(KEY))
    judge = make_limiter(quota_config(JUDGE, fresh_redis.url))  # an exact decision
    await judge.store.start()
    plan = judge.plan_for("acme", None, False)
    assert plan is not None
    (bucket,) = plan.buckets("acme", "GET", "/")
    assert bucket.key == KEY
    refused = await judge.store.acquire([bucket], 1)
    assert not refused.admitted
    assert tat - refused.now_us > 2 * bucket.tolerance_us  # the case 744efdb cut
    assert refused.states[0].retry_us == (
        tat + bucket.interval_us - bucket.tolerance_us - refused.now_us)
    assert int(admin.get(KEY)) == tat


async def test_after_a_step_back_redis_refuses_until_its_clock_catches_up(
        store: RedisStore, admin: redis.Redis) -> None:
    # The step is kept, not cut: a bucket used before it refuses up to an hour longer.
    tat = store_tat(admin, MINUTE.key, MINUTE.interval_us + HOUR_US)
    refused = await store.acquire([MINUTE], 1)
    assert not refused.admitted
    assert refused.states[0].retry_us == (
        tat + MINUTE.interval_us - MINUTE.tolerance_us - refused.now_us)


async def test_the_over_limit_cache_asks_redis_again_after_one_refill(
        fresh_redis: RedisServer, admin: redis.Redis,
        make_limiter: Callable[[Config], Limiter], quota_config: Callable[..., Config]) -> None:
    # Redis refuses for an hour (its clock stepped back): the cache reports that wait, but holds
    # it only one refill (20 ms here) on its own clock. Once Redis admits (here: the key gone,
    # as if its clock were right again), so does tenantgate, not an hour later.
    limiter = make_limiter(quota_config(EXACT, fresh_redis.url))
    await limiter.store.start()
    plan = limiter.plan_for("acme", None, False)
    assert plan is not None
    store_tat(admin, KEY, HOUR_US)
    for _ in range(2):  # from Redis, then from the cache
        refused = await limiter.check(plan, "acme", "GET", "/")
        assert not refused.admitted and refused.outcome is not None
        assert refused.outcome.states[0].retry_us > HOUR_US // 2  # Redis' wait, not capped
    await asyncio.sleep(0.2)  # ten times the longest a denial is held here
    admin.delete(KEY)
    assert (await limiter.check(plan, "acme", "GET", "/")).admitted


async def test_a_reload_that_shrinks_the_burst_refills_nothing(
        store: RedisStore, admin: redis.Redis) -> None:
    # Ten hits used a burst of 10; reloaded with a burst of 2, the bucket is 8 s past full, as
    # the embedded store keeps it. A cut at two tolerances (4 s) refilled 4 s of it.
    small = Bucket(MINUTE.key, MINUTE.name, MINUTE.limit, MINUTE.period, 2)
    tat = store_tat(admin, MINUTE.key, MINUTE.tolerance_us)
    refused = await store.acquire([small], 1)
    assert not refused.admitted
    assert refused.states[0].retry_us == (
        tat + small.interval_us - small.tolerance_us - refused.now_us)
