"""Every store (embedded, Redis, Redis Cluster) keeps the same promises."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

import redis
from tenantgate.config.model import Config
from tenantgate.quota.limiter import CompiledPlan, Limiter
from tenantgate.quota.redis import GCRA, RedisStore
from tenantgate.quota.store import Bucket
from tenantgate.testing.redis import RedisServer

MakeConfig = Callable[..., Config]

PLAN = """  default_plan: free
  plans:
    free:
      limits: [{rate: '20/day', burst: 20}]
      endpoints: [{name: writes, methods: [POST], limits: ['2/day']}]
"""


async def started(limiter: Limiter, tenant: str) -> tuple[Limiter, CompiledPlan]:
    """The limiter, started, and the plan PLAN gives `tenant`."""
    await limiter.start()
    plan = limiter.plan_for(tenant, None, False)
    assert plan is not None
    return limiter, plan


async def test_200_concurrent_requests_admit_exactly_20(
        store_url: str | None, make_limiter: Callable[[Config], Limiter],
        quota_config: MakeConfig) -> None:
    limiter, plan = await started(make_limiter(quota_config(PLAN, store_url)), "acme")
    verdicts = await asyncio.gather(*(limiter.check(plan, "acme", "GET", "/")
                                      for _ in range(200)))
    assert sum(v.admitted for v in verdicts) == 20
    assert not any(v.unavailable for v in verdicts)


async def test_a_request_denied_by_one_bucket_charges_none_of_the_others(
        store_url: str | None, make_limiter: Callable[[Config], Limiter],
        quota_config: MakeConfig) -> None:
    limiter, plan = await started(make_limiter(quota_config(PLAN, store_url)), "acme")
    writes = [(await limiter.check(plan, "acme", "POST", "/x")).admitted for _ in range(10)]
    assert writes == [True, True] + [False] * 8
    # The 8 denied writes charged nothing to the plan bucket: 18 reads are left of 20.
    reads = [(await limiter.check(plan, "acme", "GET", "/x")).admitted for _ in range(19)]
    assert reads == [True] * 18 + [False]


async def test_a_denied_request_reports_the_other_buckets_as_they_are(
        store_url: str | None, make_limiter: Callable[[Config], Limiter],
        quota_config: MakeConfig) -> None:
    # What a refused request says of the buckets that would have admitted it is what batched
    # mirrors and rate-limit headers learn: it must be their state, not a charge never made.
    limiter, plan = await started(make_limiter(quota_config(PLAN, store_url)), "acme")
    assert [(await limiter.check(plan, "acme", "POST", "/x")).admitted for _ in range(2)] == [
        True, True]
    denied = await limiter.check(plan, "acme", "POST", "/x")  # the store's answer (later ones
    assert denied.outcome is not None and not denied.outcome.admitted  # come from a cache)
    remaining = {b.name: s.remaining for b, s in zip(denied.buckets, denied.outcome.states,
                                                     strict=True)}
    assert remaining == {"free-86400s": 18, "writes-86400s": 0}


async def test_noisy_neighbour_at_10x_does_not_cost_a_quiet_tenant_a_request(
        store_url: str | None, make_limiter: Callable[[Config], Limiter],
        quota_config: MakeConfig) -> None:
    limiter, plan = await started(make_limiter(quota_config(PLAN, store_url)), "x")
    noisy = [limiter.check(plan, "noisy", "GET", "/") for _ in range(200)]
    quiet = [limiter.check(plan, "quiet", "GET", "/") for _ in range(20)]
    mixed = [c for pair in zip(noisy[::10], quiet, strict=True) for c in pair]
    mixed += [c for i, c in enumerate(noisy) if i % 10]
    verdicts = await asyncio.gather(*mixed)
    quiet_admitted = sum(v.admitted for v in verdicts[1:40:2])
    assert quiet_admitted == 20
    assert sum(v.admitted for v in verdicts) == 40


async def test_idle_keys_expire_once_the_bucket_is_full_again(
        fresh_redis: RedisServer, quota_config: MakeConfig) -> None:
    store = RedisStore(quota_config("", fresh_redis.url).quota.redis)
    try:
        began = time.monotonic()
        await store.acquire([Bucket("tg:{t:a}:plan:1", "b", 10, 1.0, 10)], 3)
        with redis.Redis(port=fresh_redis.port) as client:
            ttl = client.pttl("tg:{t:a}:plan:1")
        elapsed_ms = math.ceil((time.monotonic() - began) * 1000)
        # 3 hits of 100 ms each refill in 300 ms; the key lives that long plus 1 s of slack,
        # counted from the charge, which was made at most `elapsed_ms` before the read.
        assert 1300 - elapsed_ms - 1 <= ttl <= 1300
    finally:
        await store.close()


async def test_scripts_are_reloaded_after_redis_forgets_them(
        fresh_redis: RedisServer, quota_config: MakeConfig) -> None:
    store = RedisStore(quota_config("", fresh_redis.url).quota.redis)
    try:
        await store.start()
        with redis.Redis(port=fresh_redis.port) as client:
            assert client.script_exists(GCRA.sha) == [True]
            client.script_flush()
        outcome = await store.acquire([Bucket("tg:{t:a}:plan:1", "b", 10, 1.0, 10)], 1)
        assert outcome.admitted
        charged, now = await store.charge([(Bucket("tg:{t:a}:plan:1", "b", 10, 1.0, 10), 2,
                                            0)])
        assert charged[0] is not None and charged[0] > now
    finally:
        await store.close()


async def test_batched_hits_admitted_locally_are_charged_to_the_store(
        store_url: str | None, make_limiter: Callable[[Config], Limiter],
        quota_config: MakeConfig) -> None:
    # 100/s with a 1 s batch interval: 100 hits per interval may be admitted locally, then
    # one sync charges them. On Redis Cluster redis-py refuses scripts in pipelines: every
    # sync failed, and the hits admitted locally were never charged.
    limiter = make_limiter(quota_config("""  default_plan: batched
  plans:
    batched: {limits: ['8640000/day'], mode: batched, batch_interval: 1s}
""", store_url))
    await limiter.start()
    plan = limiter.plan_for("acme", None, False)
    assert plan is not None
    [bucket] = plan.buckets("acme", "GET", "/")
    _, start = await limiter.store.charge([(bucket, 0, 0)])  # 0 hits: the store's clock only
    verdicts = [await limiter.check(plan, "acme", "GET", "/") for _ in range(51)]
    assert all(v.admitted for v in verdicts)
    assert limiter._batcher is not None
    await limiter._batcher.sync()
    [tat], now = await limiter.store.charge([(bucket, 0, 0)])
    # 51 hits of 10 ms each, charged from a time between `start` and `now` whatever the
    # machine's speed; uncharged local hits leave the tat 50 intervals short.
    assert tat is not None
    assert start + 51 * bucket.interval_us <= tat <= now + 51 * bucket.interval_us
