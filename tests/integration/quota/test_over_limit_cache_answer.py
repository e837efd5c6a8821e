"""The over-limit cache answers a denial as the store would have: the denying bucket's retry,
reset and remaining, for the cost asked, not only the cost it saw denied."""

from __future__ import annotations

import pytest
from tenantgate.config.quota import RedisConfig
from tenantgate.quota.limiter import OverLimitCache
from tenantgate.quota.redis import RedisStore
from tenantgate.quota.store import Bucket
from tenantgate.testing.redis import RedisServer

ONE_PER_SECOND = Bucket("tg:{t:acme}:plan:1", "plan", 1, 1.0, 1)  # interval 1 s, burst 1
SLACK_US = 300_000  # the time between the two answers, and more


@pytest.mark.parametrize("cost", [1, 3])
async def test_a_cached_denial_reports_redis_retry_for_a_larger_cost(
        fresh_redis: RedisServer, cost: int) -> None:
    # After a cost-1 denial a cost-3 request was said to wait 1 s where Redis says 3 s.
    store = RedisStore(RedisConfig.model_validate({"url": fresh_redis.url, "timeout": "2s"}))
    cache, buckets = OverLimitCache(100), [ONE_PER_SECOND]
    try:
        assert (await store.acquire(buckets)).admitted
        denied = await store.acquire(buckets)
        assert not denied.admitted
        cache.remember(buckets, denied, 1)
        cached = cache.check(buckets, cost)
        told = await store.acquire(buckets, cost)  # refused: charges nothing
        assert cached is not None and not told.admitted
        (ours,), (theirs,) = cached, told.states
        assert abs(ours.retry_us - theirs.retry_us) < SLACK_US
        assert abs(ours.reset_us - theirs.reset_us) < SLACK_US
        assert ours.remaining == theirs.remaining
    finally:
        await store.close()
