"""Batched mode's sync loop: the background task that charges locally admitted hits."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Sequence

import pytest
from tenantgate.config.load import parse_config
from tenantgate.errors import QuotaStoreUnavailable
from tenantgate.quota import batched, memory
from tenantgate.quota.batched import CHUNK, Batcher, Mirror
from tenantgate.quota.limiter import Limiter
from tenantgate.quota.memory import MemoryStore
from tenantgate.quota.store import Bucket, Charge

BUCKET = Bucket(key="tg:{t:acme}:plan:1", name="plan-1s", limit=1000, period=1.0, burst=1000)


class FailsOnce(MemoryStore):
    """A store whose first charge raises `error`."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error
        self.failures = 0

    async def charge(self, items: Sequence[Charge]) -> tuple[list[int | None], int]:
        if self.failures == 0:
            self.failures += 1
            raise self.error
        return await super().charge(items)


async def test_an_unexpected_sync_error_does_not_end_batching() -> None:
    # Before, any error but QuotaStoreUnavailable ended the task silently: the hits admitted
    # locally were never charged and the local allowance never refilled.
    store = FailsOnce(RuntimeError("a bug in a store"))  # no store is expected to raise it
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


async def test_a_sync_the_store_refused_says_why_and_charges_later(
        caplog: pytest.LogCaptureFixture) -> None:
    # Before, a store failure in the sync loop was passed over in silence: with every request
    # admitted locally, nothing in the log said why charges were not reaching Redis.
    store = FailsOnce(QuotaStoreUnavailable("redis: NoPermissionError: NOPERM no permission"))
    batcher = Batcher(store, interval=0.01, max_entries=100)
    batcher.learn([BUCKET], await store.acquire([BUCKET]), 0.01)
    assert batcher.decide_local([BUCKET], 1) is not None
    batcher.start()
    try:
        for _ in range(200):
            await asyncio.sleep(0.01)
            if store.failures and not _pending(batcher):
                break
        assert not _pending(batcher), "the hit stayed pending after the store came back"
    finally:
        await batcher.close()
    [warning] = [r for r in caplog.records if "batched sync" in r.getMessage()]
    assert warning.levelname == "WARNING"
    assert warning.getMessage() == (
        "quota store memory unavailable (batched sync: admitted hits stay pending, charged once "
        "it answers): redis: NoPermissionError: NOPERM no permission")


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


class Clock:
    """Stands in for the time module in batched.py and memory.py: time moves when told."""

    def __init__(self, us: int) -> None:
        self.us = us

    def monotonic_ns(self) -> int:
        return self.us * 1000


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock(10**12)
    monkeypatch.setattr(batched, "time", fake)
    monkeypatch.setattr(memory, "time", fake)
    return fake


class FlakyStore(MemoryStore):
    """Charges as the embedded store does, except the calls and buckets it is told to fail;
    records every charge call. `gate`, when set, holds each call after it charged (a reply
    not read yet) until it is opened."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[list[Charge]] = []
        self.fail_calls: set[int] = set()  # 0-based call numbers refused before charging
        self.fail_keys: set[str] = set()  # charges refused alone (an error reply)
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()

    async def charge(self, items: Sequence[Charge]) -> tuple[list[int | None], int]:
        self.calls.append(list(items))
        if len(self.calls) - 1 in self.fail_calls:
            raise QuotaStoreUnavailable("circuit open")
        ok = [i for i in items if i[0].key not in self.fail_keys]
        tats, now = await super().charge(ok)
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        made = dict(zip([i[0].key for i in ok], tats, strict=True))
        return [made.get(i[0].key) for i in items], now


def hundred(key: str = "tg:{t:acme}:plan:1") -> Bucket:
    return Bucket(key=key, name="plan-1s", limit=100, period=1.0, burst=100)


async def mirrored(store: MemoryStore, buckets: Sequence[Bucket], hits: int) -> Batcher:
    """A batcher whose mirrors learned each bucket from the store, then admitted `hits`."""
    batcher = Batcher(store, interval=1.0, max_entries=100_000)
    for bucket in buckets:
        batcher.learn([bucket], await store.acquire([bucket], 0), 1.0)
        for _ in range(hits):
            assert batcher.admit_local([bucket], 1)
    return batcher


def tat_of(store: MemoryStore, bucket: Bucket) -> int:
    return store._tats.get(bucket.key, 0)


async def test_a_sync_that_sent_nothing_keeps_its_hits_for_the_next(clock: Clock) -> None:
    # Refused before anything was sent (circuit open, connection refused), the sync dropped
    # every pending hit: each failed sync handed out one more allowance, uncharged.
    store, bucket = FlakyStore(), hundred()
    batcher = await mirrored(store, [bucket], 40)
    store.fail_calls = {0}
    with pytest.raises(QuotaStoreUnavailable):
        await batcher.sync()
    mirror = batcher._mirrors[bucket.key]
    assert (mirror.pending, mirror.synced) == (40, 0)  # kept, and stale: no local admission
    assert batcher.decide_local([bucket], 1) is None
    await batcher.sync()
    assert tat_of(store, bucket) == clock.us + 40 * bucket.interval_us
    assert mirror.pending == 0


async def test_hits_admitted_during_a_failed_sync_stay_pending_with_those_sent(
        clock: Clock) -> None:
    store, bucket = FlakyStore(), hundred()
    batcher = await mirrored(store, [bucket], 10)
    store.fail_calls, store.gate = {0}, asyncio.Event()

    async def refused_after_a_while(items: Sequence[Charge]) -> tuple[list[int | None], int]:
        store.entered.set()
        await store.gate.wait()  # type: ignore[union-attr]
        raise QuotaStoreUnavailable("TimeoutError")

    store.charge = refused_after_a_while  # type: ignore[method-assign]
    sync = asyncio.ensure_future(batcher.sync())
    await store.entered.wait()
    for _ in range(5):
        assert batcher.admit_local([bucket], 1)  # while the sync is in flight
    store.gate.set()
    with pytest.raises(QuotaStoreUnavailable):
        await sync
    assert batcher._mirrors[bucket.key].pending == 15


async def test_hits_admitted_during_a_sync_that_succeeded_stay_pending(clock: Clock) -> None:
    store, bucket = FlakyStore(), hundred()
    batcher = await mirrored(store, [bucket], 10)
    store.gate = asyncio.Event()
    sync = asyncio.ensure_future(batcher.sync())
    await store.entered.wait()
    for _ in range(5):
        assert batcher.admit_local([bucket], 1)
    store.gate.set()
    await sync
    assert batcher._mirrors[bucket.key].pending == 5
    store.gate = None
    await batcher.sync()
    assert tat_of(store, bucket) == clock.us + 15 * bucket.interval_us  # each hit once


async def test_a_large_sync_goes_in_chunks_each_settled_on_its_own(clock: Clock) -> None:
    # One pipeline of 20,000 buckets under one timeout timed out part-way: charged, but the
    # whole sync counted as failed.
    store = FlakyStore()
    buckets = [hundred(f"tg:{{t:t{i}}}:plan:1") for i in range(3 * CHUNK + 10)]
    batcher = await mirrored(store, buckets, 1)
    store.fail_calls = {2}
    with pytest.raises(QuotaStoreUnavailable):
        await batcher.sync()
    assert [len(call) for call in store.calls] == [CHUNK, CHUNK, CHUNK]
    pending = [batcher._mirrors[b.key].pending for b in buckets]
    assert pending == [0] * (2 * CHUNK) + [1] * (CHUNK + 10)
    await batcher.sync()
    assert [len(call) for call in store.calls[3:]] == [CHUNK, 10]
    assert all(tat_of(store, b) == clock.us + b.interval_us for b in buckets)  # once each


async def test_a_charge_that_failed_alone_is_sent_again_and_the_others_are_not(
        clock: Clock) -> None:
    store, first, second = FlakyStore(), hundred("tg:{t:a}:plan:1"), hundred("tg:{t:b}:plan:1")
    batcher = await mirrored(store, [first, second], 3)
    store.fail_keys = {second.key}
    await batcher.sync()  # one of two answered: the call itself succeeded
    assert (batcher._mirrors[first.key].pending, batcher._mirrors[second.key].pending) == (0, 3)
    store.fail_keys = set()
    await batcher.sync()
    assert tat_of(store, first) == tat_of(store, second) == clock.us + 3 * first.interval_us


async def test_close_lets_a_sync_in_flight_finish_then_charges_the_rest_once(
        clock: Clock) -> None:
    # close() cancelled the sync in flight: its hits stayed pending although charged, and
    # close()'s own sync charged them again.
    store, bucket = FlakyStore(), hundred()
    batcher = await mirrored(store, [bucket], 10)
    store.gate = asyncio.Event()
    batcher._interval = 0.001  # the first sync starts at once (the store clock is fake)
    batcher.start()
    await store.entered.wait()  # charged, the reply not read yet
    assert batcher.admit_local([bucket], 1)  # admitted while it is in flight
    closing = asyncio.ensure_future(batcher.close())
    await asyncio.sleep(0)
    store.gate.set()
    await closing
    assert tat_of(store, bucket) == clock.us + 11 * bucket.interval_us  # each hit once
    assert batcher._mirrors[bucket.key].pending == 0


BATCHED_100 = """
context:
  active_key: k1
  keys: [{id: k1, secret: {fromEnv: TG_QUOTA_TEST_SECRET}}]
quota:
  enabled: true
  plans:
    p: {limits: ['100/s'], mode: batched, batch_interval: 1s}
"""


@pytest.mark.parametrize("seed", range(5))
async def test_one_replica_batched_never_admits_more_than_exact(
        seed: int, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    # With one replica a mirror sees every hit, so nothing it admits locally may pass what
    # exact would; after a burst with a long interval it may admit less (docs/quota.md).
    monkeypatch.setenv("TG_QUOTA_TEST_SECRET", "x" * 40)
    limiter = Limiter(parse_config(BATCHED_100), MemoryStore())
    assert limiter._batcher is not None
    plan = limiter.plans["p"]
    [bucket] = plan.buckets("acme", "GET", "/")
    exact, rng, start = MemoryStore(), random.Random(seed), clock.us
    got, want = 0, 0
    next_sync = start + 1_000_000
    for _ in range(3000):
        # About 3x the rate, with a pause now and then: bursts, the rate and denials.
        clock.us += (rng.randint(100_000, 2_000_000) if rng.random() < 0.01
                     else rng.choice([0, 0, 500, 2000, 5000, 12_000]))
        while clock.us >= next_sync:  # the sync task's tick, driven by the fake clock
            await limiter._batcher.sync()
            next_sync += 1_000_000
        got += (await limiter.check(plan, "acme", "GET", "/")).admitted
        want += exact.acquire_now([bucket], 1, clock.us).admitted
        assert got <= want
    assert 500 < want < 3000  # bursts, the rate, and denials all happened


class _CallOrder(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    async def acquire(self, buckets: Sequence[Bucket], cost: int = 1) -> memory.Outcome:
        self.calls.append("acquire")
        return await super().acquire(buckets, cost)

    async def charge(self, items: Sequence[Charge]) -> tuple[list[int | None], int]:
        self.calls.append("charge")
        return await super().charge(items)


async def test_a_check_that_reaches_the_store_makes_one_call_not_a_charge_first(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Charging a bucket's pending hits before each store decision cost every such Check a
    # round trip of its own on redis-py's pool: a burst of 1,000 tenants timed most of them
    # out into the failure mode. Pending hits go with the sync only.
    monkeypatch.setenv("TG_QUOTA_TEST_SECRET", "x" * 40)
    store = _CallOrder()
    # An allowance of 10 an interval in a burst of 50: the 12th Check finds the mirror
    # admitting, the allowance used up and 10 hits pending, and goes to the store.
    limiter = Limiter(parse_config(BATCHED_100.replace(
        "limits: ['100/s']", "limits: ['10/s'], burst: 50")), store)
    plan = limiter.plans["p"]
    for _ in range(12):
        assert (await limiter.check(plan, "acme", "GET", "/")).admitted
    assert store.calls == ["acquire", "acquire"]


def test_a_mirror_with_nothing_in_flight_takes_the_stores_tat_even_behind_its_own() -> None:
    # Kept at the larger of the two, a mirror never moved back: after a key was deleted, or
    # Redis restarted empty, the replica kept refusing what the store admitted, for as long
    # as the bucket took to drain (a day for a daily limit).
    interval = BUCKET.interval_us
    idle = Mirror(BUCKET, tat=5_000 * interval, allowance_max=10, allowance=10)
    idle.refresh(store_tat=1_000, local=1)
    assert idle.tat == 1_000
    # Hits of ours not yet charged still count from where they were admitted.
    busy = Mirror(BUCKET, tat=5_000 * interval, allowance_max=10, allowance=7, pending=3)
    busy.refresh(store_tat=1_000, local=1)
    assert busy.tat == 5_000 * interval
