"""Batched mode: admit from a local mirror of each bucket, charge the store those hits once
per interval. Over-admission is bounded by the per-interval allowance (rate x interval) x
replicas; a failed charge is sent again, never dropped (docs/quota.md, Modes)."""

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


# The quota store failing decides every request's fate (its failure mode: 503, admitted
# unchecked, or a local share of the limit), so it is said every 10 s, not once a minute as
# a failing API-key store is (that one fails only the requests holding a key): an operator
# watching the log during an outage sees it still going on, and why.
STORE_DOWN_WARN_EVERY = 10.0

# Buckets per charge pipeline: each is its own round trip under its own timeout, and is
# settled on its own. One pipeline of 20,000 timed out part-way, charged but not settled.
CHUNK = 256


@dataclass(slots=True)
class Mirror:
    bucket: Bucket
    tat: int  # the store's clock (µs), including hits admitted here and not yet synced
    allowance_max: int
    allowance: int
    pending: int = 0  # admitted here, not yet sent
    synced: int = 0  # local monotonic µs of the last refresh from the store
    sending: int = 0  # sent, not yet settled: back to pending if the charge fails

    def floor(self) -> int:
        """Where the pending hits start: the tat they are charged from (see store.Charge)."""
        return self.tat - self.pending * self.bucket.interval_us

    def refresh(self, store_tat: int, local: int) -> None:
        """The store's tat, with the pending hits on top of it, or of their own floor when
        the store is behind it (they were admitted after what it knows)."""
        if self.pending or self.sending:
            self.tat = max(store_tat, self.floor()) + self.pending * self.bucket.interval_us
        else:  # nothing of ours in flight: the store is right, even behind us (a reset key)
            self.tat = store_tat
        self.synced = local


class Batcher:
    def __init__(self, store: QuotaStore, interval: float, max_entries: int) -> None:
        self._store = store
        self._interval = interval
        self._interval_us = int(interval * 1_000_000)
        self._max_entries = max_entries
        self._mirrors: dict[str, Mirror] = {}
        self._offset_us = 0  # store clock minus local monotonic clock
        self._task: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()
        self._sync_failing = Throttle(60.0)  # one traceback a minute for a recurring error
        self._store_failing = Throttle(STORE_DOWN_WARN_EVERY)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        """Charge what was admitted since the last sync. A sync in flight is let finish (each
        round trip is bounded by the store's timeout): cancelled, it could not tell what it
        had charged, and the last sync would charge those hits again."""
        self._closing.set()
        if self._task is not None:
            await self._task  # ends once a sync in flight has
            self._task = None
        with contextlib.suppress(QuotaStoreUnavailable):
            await self.sync()

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
            m.refresh(outcome.now_us + state.reset_us, local)

    async def sync(self) -> None:
        """Charge every pending hit, CHUNK buckets per round trip; stops at the first failure
        and raises it (the hits not charged stay pending)."""
        dirty = [m for m in self._mirrors.values() if m.pending > 0]
        start = 0
        try:
            for start in range(0, len(dirty), CHUNK):
                await self._send(dirty[start:start + CHUNK])
        except BaseException:
            for m in dirty[start + CHUNK:]:
                m.synced = 0  # never sent: stale, as those _send failed to charge
            raise
        finally:
            self._refill()

    async def _send(self, mirrors: list[Mirror]) -> None:
        """One round trip charging these mirrors' pending hits. What it made is settled; what
        failed stays pending and is sent again. That covers a charge made whose reply was
        lost (a timeout after the write): charged twice, which refuses more, never less."""
        sent = [(m, m.pending, m.floor()) for m in mirrors]  # sync passes only mirrors with hits
        for m, n, _ in sent:
            m.pending, m.sending = 0, m.sending + n  # hits admitted meanwhile are pending anew
        try:
            tats, now = await self._store.charge([(m.bucket, n, f) for m, n, f in sent])
        except BaseException:
            for m, n, _ in sent:
                # Stale: until a sync or an exact decision succeeds, the next request for
                # this bucket meets the store (which retries these) or its failure mode.
                m.pending, m.sending, m.synced = m.pending + n, m.sending - n, 0
            raise
        local = monotonic_us()
        self._offset_us = now - local
        for (m, n, _), tat in zip(sent, tats, strict=True):
            m.sending -= n
            if tat is None:  # that charge alone failed
                m.pending, m.synced = m.pending + n, 0
            else:
                m.refresh(tat, local)

    def _refill(self) -> None:
        local = monotonic_us()
        idle = [k for k, m in self._mirrors.items()
                if not (m.pending or m.sending) and local - m.synced > 10 * self._interval_us]
        for key in idle:
            del self._mirrors[key]
        for m in self._mirrors.values():
            m.allowance = m.allowance_max

    async def _run(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self._interval):
                    await self._closing.wait()
                return  # close() asked; it syncs once more itself
            except TimeoutError:
                pass
            try:
                await self.sync()
            except QuotaStoreUnavailable as exc:
                # The breaker and the failure mode deal with it; the hits stay pending. Said
                # here too: with every request admitted locally, no decision fails to say why.
                if self._store_failing.ready():  # exc says why, as store_errors described it
                    log.warning("quota store %s unavailable (batched sync: admitted hits stay "
                                "pending, charged once it answers): %s", self._store.name, exc)
            except Exception:
                # A bug must not end batching for good (admitted hits never charged, the
                # allowance never refilled): the pending hits are sent again next interval.
                metrics.INTERNAL_ERRORS.inc()
                if self._sync_failing.ready():
                    log.exception("batched quota sync failed; retrying every interval")
