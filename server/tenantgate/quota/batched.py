"""Batched mode: admit from a local mirror of each bucket, sync all hits in one pipeline per
interval. Over-admission is bounded by the per-interval allowance (rate x interval) x replicas."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

from tenantgate.errors import QuotaStoreUnavailable
from tenantgate.observe import metrics
from tenantgate.observe.throttle import Throttle
from tenantgate.quota.memory import monotonic_us
from tenantgate.quota.store import Bucket, Outcome, QuotaStore, gcra

log = logging.getLogger("tenantgate.quota")


def allowance(bucket: Bucket, interval: float) -> int:
    """Hits one replica may admit per interval without asking the store: rate x interval."""
    return max(1, math.floor(bucket.limit / bucket.period * interval))


@dataclass(slots=True)
class Mirror:
    bucket: Bucket
    tat: int  # the store's clock (µs), including hits admitted here and not yet synced
    allowance_max: int
    allowance: int
    pending: int = 0
    synced: int = 0  # local monotonic µs of the last refresh from the store


class Batcher:
    def __init__(self, store: QuotaStore, interval: float, max_entries: int) -> None:
        self._store = store
        self._interval = interval
        self._interval_us = int(interval * 1_000_000)
        self._max_entries = max_entries
        self._mirrors: dict[str, Mirror] = {}
        self._offset_us = 0  # store clock minus local monotonic clock
        self._task: asyncio.Task[None] | None = None
        self._sync_failing = Throttle(60.0)  # one traceback a minute for a recurring error

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(QuotaStoreUnavailable):
            await self.sync()  # charge what was admitted since the last tick

    def decide_local(self, buckets: Sequence[Bucket], cost: int) -> Outcome | None:
        """A local decision, or None when only the store can decide (no fresh mirror, or this
        replica used up its allowance for the interval)."""
        local = time.monotonic_ns() // 1000  # memory.monotonic_us(), inline: every Check
        oldest = local - 2 * self._interval_us
        fresh: list[Mirror] = []
        for bucket in buckets:
            mirror = self._mirrors.get(bucket.key)
            if mirror is None or mirror.synced < oldest:
                return None
            fresh.append(mirror)
        outcome, new_tats = gcra([m.tat for m in fresh], buckets, cost, local + self._offset_us)
        if not outcome.admitted:
            # The mirror lags others' hits, never ours: if it says no, the store says no.
            return outcome
        for m in fresh:
            if m.allowance < cost:
                return None
        for m, tat in zip(fresh, new_tats, strict=True):
            m.tat, m.pending, m.allowance = tat, m.pending + cost, m.allowance - cost
        return outcome

    def admit_local(self, buckets: Sequence[Bucket], cost: int) -> bool:
        """decide_local for a caller that needs only "admitted": True when the mirrors admit
        `cost` here (charged to them, exactly as decide_local would), False when decide_local
        must answer instead (no fresh mirror, no allowance left, or a denial with its states).

        The same GCRA test as store.gcra, without building each bucket's state: on an
        admitted Check with no rate-limit headers to send, those were most of its cost.
        tests/unit/test_quota_batched.py compares the two on random mirrors."""
        local = time.monotonic_ns() // 1000
        oldest = local - 2 * self._interval_us
        now = local + self._offset_us
        admitted: list[tuple[Mirror, int]] = []
        for bucket in buckets:
            mirror = self._mirrors.get(bucket.key)
            if mirror is None or mirror.synced < oldest or mirror.allowance < cost:
                return False
            new_tat = max(mirror.tat, now) + cost * bucket.interval_us
            if new_tat - bucket.tolerance_us > now:  # gcra's `retry > 0`: a denial
                return False
            admitted.append((mirror, new_tat))
        for mirror, new_tat in admitted:
            mirror.tat, mirror.pending = new_tat, mirror.pending + cost
            mirror.allowance -= cost
        return True

    def learn(self, buckets: Sequence[Bucket], outcome: Outcome, interval: float) -> None:
        """Refresh mirrors from an exact store decision."""
        local = monotonic_us()
        self._offset_us = outcome.now_us - local
        for bucket, state in zip(buckets, outcome.states, strict=True):
            m = self._mirrors.get(bucket.key)
            if m is None:
                if len(self._mirrors) >= self._max_entries:
                    continue  # bounded: beyond it, this bucket just stays on the exact path
                cap = allowance(bucket, interval)
                m = self._mirrors[bucket.key] = Mirror(bucket, 0, cap, cap)
            m.tat = outcome.now_us + state.reset_us + m.pending * bucket.interval_us
            m.synced = local

    async def sync(self) -> None:
        dirty = [m for m in self._mirrors.values() if m.pending > 0]
        sent = [m.pending for m in dirty]
        try:
            if dirty:
                tats, now = await self._store.charge([(m.bucket, n) for m, n in
                                                      zip(dirty, sent, strict=True)])
                local = monotonic_us()
                self._offset_us = now - local
                for m, n, tat in zip(dirty, sent, tats, strict=True):
                    m.pending -= n
                    m.tat, m.synced = tat + m.pending * m.bucket.interval_us, local
        except QuotaStoreUnavailable:
            for m in dirty:
                m.pending, m.synced = 0, 0  # stale: the next request meets the failure mode
            raise
        finally:
            self._refill()

    def _refill(self) -> None:
        local = monotonic_us()
        idle = [k for k, m in self._mirrors.items()
                if m.pending == 0 and local - m.synced > 10 * self._interval_us]
        for key in idle:
            del self._mirrors[key]
        for m in self._mirrors.values():
            m.allowance = m.allowance_max

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.sync()
            except QuotaStoreUnavailable:
                pass  # the breaker and the failure mode deal with it
            except Exception:
                # A bug must not end batching for good (admitted hits never charged, the
                # allowance never refilled): the pending hits are sent again next interval.
                metrics.INTERNAL_ERRORS.inc()
                if self._sync_failing.ready():
                    log.exception("batched quota sync failed; retrying every interval")
