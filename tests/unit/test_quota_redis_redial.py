"""A READONLY refusal drops the pool's connections (quota/redis.py _redial), but the call
that met it does not wait past its own deadline for that: a slow disconnect held a Check or a
batched charge past redis.timeout, and Envoy answered 503 whatever failure_mode said."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio import ConnectionPool, Redis
from redis.exceptions import ReadOnlyError
from tenantgate.config.quota import RedisConfig
from tenantgate.errors import QuotaStoreUnavailable
from tenantgate.quota.redis import RedisStore
from tenantgate.quota.store import Bucket


class HangingPool(ConnectionPool):
    """A pool whose disconnect ends only once released (or, should the caller wait for it
    anyway, after a while: then the test fails rather than hangs)."""

    def __init__(self) -> None:
        super().__init__(host="127.0.0.1", port=1)  # never dialled
        self.released = asyncio.Event()

    async def disconnect(self, inuse_connections: bool = True) -> None:
        try:
            async with asyncio.timeout(2.0):
                await self.released.wait()
        except TimeoutError:
            pass


async def test_a_slow_pool_disconnect_does_not_hold_the_call_that_met_readonly() -> None:
    pool = HangingPool()
    store = RedisStore(RedisConfig(url="redis://127.0.0.1:1/0", timeout=0.05),
                       Redis(connection_pool=pool))

    async def refused(*_: Any) -> list[Any]:
        raise ReadOnlyError("You can't write against a read only replica.")

    store._charge_pipeline = refused  # type: ignore[method-assign]
    with pytest.raises(QuotaStoreUnavailable, match="ReadOnlyError"):
        await store.charge([(Bucket("tg:{t:a}:plan:1", "p", 1, 1.0, 1), 1, 0)])
    redialling = store._redialling
    assert redialling is not None and not redialling.done()  # raised without waiting for it
    pool.released.set()
    await store.close()  # waits for the disconnect: no task left behind
    assert redialling.done()
