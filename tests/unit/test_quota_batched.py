"""Batched mode's sync loop: the background task that charges locally admitted hits."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from tenantgate.quota.batched import Batcher
from tenantgate.quota.memory import MemoryStore
from tenantgate.quota.store import Bucket

BUCKET = Bucket(key="tg:{t:acme}:plan:1", name="plan-1s", limit=1000, period=1.0, burst=1000)


class BrokenOnce(MemoryStore):
    """A store whose first charge fails with an error no store is expected to raise."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 0

    async def charge(self, items: Sequence[tuple[Bucket, int]]) -> tuple[list[int], int]:
        if self.failures == 0:
            self.failures += 1
            raise RuntimeError("a bug in a store")
        return await super().charge(items)


async def test_an_unexpected_sync_error_does_not_end_batching() -> None:
    # Before, any error but QuotaStoreUnavailable ended the task silently: the hits admitted
    # locally were never charged and the local allowance never refilled.
    store = BrokenOnce()
    batcher = Batcher(store, interval=0.01, max_entries=100)
    batcher.learn([BUCKET], await store.acquire([BUCKET]), 0.01)
    assert batcher.decide_local([BUCKET], 1) is not None  # admitted here, pending a sync
    batcher.start()
    try:
        for _ in range(200):
            await asyncio.sleep(0.01)
            if store.failures and BUCKET.key in store._tats and not _pending(batcher):
                break
        assert store.failures == 1
        assert not _pending(batcher), "the hit admitted locally was never charged"
    finally:
        await batcher.close()


def _pending(batcher: Batcher) -> int:
    return sum(m.pending for m in batcher._mirrors.values())
