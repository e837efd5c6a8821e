"""Batched mode's sync loop: the background task that charges locally admitted hits."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Sequence

import pytest
from tenantgate.quota import batched
from tenantgate.quota.batched import Batcher, Mirror
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


class _FrozenClock:
    """Stands in for the time module in batched.py: both decisions see the same instant."""

    def __init__(self, ns: int) -> None:
        self.ns = ns

    def monotonic_ns(self) -> int:
        return self.ns


def _mirrored(rng: random.Random, buckets: list[Bucket], now_us: int) -> Batcher:
    batcher = Batcher(MemoryStore(), interval=0.05, max_entries=100)
    for bucket in buckets:
        allowance = rng.randint(1, 5)
        # tat around now: behind it (full), within the tolerance (some left) or past it.
        tat = now_us + rng.randint(-2, bucket.burst + 2) * bucket.interval_us + rng.randint(-3, 3)
        batcher._mirrors[bucket.key] = Mirror(bucket, tat, allowance, rng.randint(0, allowance),
                                              pending=rng.randint(0, 3),
                                              synced=now_us - rng.choice([0, 60_000, 120_000]))
    return batcher


def test_a_refusal_teaches_the_mirror_no_charge_the_store_did_not_make() -> None:
    # A write refused by its own bucket charges the plan bucket nothing. The outcome used to
    # report the plan bucket as if charged, the mirror learned that, and refused reads the
    # store would admit until the next sync.
    plan = Bucket(key="tg:{t:acme}:plan", name="plan", limit=3, period=1.0, burst=3)
    writes = Bucket(key="tg:{t:acme}:writes", name="writes", limit=1, period=1.0, burst=1)
    store = MemoryStore()
    now = 10_000_000
    assert store.acquire_now([plan, writes], 1, now).admitted
    refused = store.acquire_now([plan, writes], 1, now)
    assert not refused.admitted
    read = store.acquire_now([plan], 0, now)  # cost 0: the plan bucket as the store has it
    assert refused.states[0] == read.states[0]
    assert (refused.states[0].remaining, refused.states[0].retry_us) == (2, 0)
    batcher = Batcher(store, interval=0.5, max_entries=100)
    batcher.learn([plan, writes], refused, 0.5)
    assert batcher._mirrors[plan.key].tat == store._tats[plan.key]


def test_admit_local_agrees_with_decide_local(monkeypatch: pytest.MonkeyPatch) -> None:
    # admit_local skips the per-bucket states; its yes, and what it charges, must be exactly
    # decide_local's, whatever the mirrors hold (fresh or stale, allowance, near the limit).
    now_us = 10**12
    monkeypatch.setattr(batched, "time", _FrozenClock(now_us * 1000))
    rng = random.Random(7)
    admitted_seen = refused_seen = 0
    for _ in range(2000):
        buckets = [Bucket(f"tg:{{t:a}}:b{i}", f"b{i}", rng.choice([5, 10, 1000]),
                          rng.choice([1.0, 60.0]), rng.randint(1, 4))
                   for i in range(rng.randint(1, 3))]
        seed, cost = rng.random(), rng.randint(1, 3)
        fast = _mirrored(random.Random(seed), buckets, now_us)
        full = _mirrored(random.Random(seed), buckets, now_us)
        before = [dataclasses.astuple(m) for m in fast._mirrors.values()]
        admitted = fast.admit_local(buckets, cost)
        outcome = full.decide_local(buckets, cost)
        assert admitted == (outcome is not None and outcome.admitted)
        if admitted:
            admitted_seen += 1
            assert [dataclasses.astuple(m) for m in fast._mirrors.values()] == [
                dataclasses.astuple(m) for m in full._mirrors.values()]
        else:
            refused_seen += 1
            assert [dataclasses.astuple(m) for m in fast._mirrors.values()] == before
    assert admitted_seen > 100 and refused_seen > 100  # both sides of the test exercised
