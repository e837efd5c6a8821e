"""Redis' clock stepped back: a bucket's tat is absolute (TIME), so it looks that much fuller.

The clock of a throwaway redis-server cannot be stepped here; a stepped-back clock is a tat
written far ahead of it, which is what every bucket used lately looks like after the step.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import redis
from tenantgate.config.model import Config
from tenantgate.quota.redis import RedisStore
from tenantgate.quota.store import Bucket
from tenantgate.testing.redis import RedisServer

HOUR_US = 3600 * 1_000_000
MINUTE = Bucket("tg:{t:acme}:plan:60", "free-60s", 60, 60.0, 10)  # 1 s apart, burst 10


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


def step_back(admin: redis.Redis, bucket: Bucket, by_us: int = HOUR_US) -> None:
    """The bucket as one request left it, seen after the clock went back `by_us`."""
    store_tat(admin, bucket, bucket.interval_us + by_us)


def store_tat(admin: redis.Redis, bucket: Bucket, ahead_us: int) -> int:
    """Stores the bucket's tat `ahead_us` past Redis' now, expiring as the scripts set it."""
    tat = redis_now(admin) + ahead_us
    admin.set(bucket.key, tat, px=ahead_us // 1000 + 1000)
    return tat


async def test_a_bucket_stepped_back_refuses_at_most_one_refill(
        store: RedisStore, admin: redis.Redis) -> None:
    step_back(admin, MINUTE)
    outcome = await store.acquire([MINUTE], 1)
    assert not outcome.admitted
    # One full refill (10 s) and this request's second at most; 3592 s before.
    assert 0 < outcome.states[0].retry_us <= MINUTE.tolerance_us + MINUTE.interval_us
    assert outcome.states[0].reset_us <= 2 * MINUTE.tolerance_us
    # Stored cut, its expiry with it: the next call does not find the hour again.
    assert int(admin.get(MINUTE.key)) <= redis_now(admin) + 2 * MINUTE.tolerance_us
    assert admin.pttl(MINUTE.key) <= (2 * MINUTE.tolerance_us) // 1000 + 1000


async def test_a_bucket_stepped_back_admits_again_once_that_refill_passed(
        store: RedisStore, admin: redis.Redis) -> None:
    tiny = Bucket("tg:{t:acme}:plan:0.002", "free-0.002s", 1, 0.002, 1)  # refills in 2 ms
    step_back(admin, tiny)
    assert not (await store.acquire([tiny], 1)).admitted
    await asyncio.sleep(0.2)  # 100 refills; an hour before the cut
    assert (await store.acquire([tiny], 1)).admitted


async def test_a_batched_charge_on_a_bucket_stepped_back_counts_from_the_cut(
        store: RedisStore, admin: redis.Redis) -> None:
    step_back(admin, MINUTE)
    tats, now = await store.charge([(MINUTE, 1, redis_now(admin))])
    assert tats[0] is not None
    assert tats[0] <= now + 2 * MINUTE.tolerance_us + MINUTE.interval_us


async def test_what_replicas_put_past_full_is_kept_to_be_paid_back(
        store: RedisStore, admin: redis.Redis) -> None:
    # Batched replicas' hits, charged unconditionally, can leave a bucket past full: that is
    # no clock step, and neither script forgets it (docs/quota.md, over-admission bound).
    debt = MINUTE.tolerance_us // 2
    tat = store_tat(admin, MINUTE, MINUTE.tolerance_us + debt)
    refused = await store.acquire([MINUTE], 1)
    assert not refused.admitted
    assert refused.states[0].retry_us > debt // 2  # the debt (5 s) counts, uncut
    assert int(admin.get(MINUTE.key)) == tat  # a refusal stores nothing
    tats, _ = await store.charge([(MINUTE, 2, redis_now(admin))])
    assert tats[0] == tat + 2 * MINUTE.interval_us
