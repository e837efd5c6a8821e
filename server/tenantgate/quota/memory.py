"""The embedded in-process store: the same GCRA as Redis, for one replica (no other server)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from tenantgate.quota.store import Bucket, Charge, Outcome, gcra

_MIN_SWEEP = 1024


def monotonic_us() -> int:
    return time.monotonic_ns() // 1000


class MemoryStore:
    """Buckets in a dict; a bucket that is full again is dropped, so memory follows activity.

    Single-replica by nature: two processes each with a MemoryStore enforce the limit twice.
    """

    name = "memory"
    failing = False  # in-process: it always answers
    cause = "none"

    def __init__(self, max_entries: int = 100_000) -> None:
        self._tats: dict[str, int] = {}
        self._max_entries = max_entries
        self._sweep_at = self._next_sweep(0)

    @property
    def max_entries(self) -> int:
        return self._max_entries

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def __len__(self) -> int:
        return len(self._tats)

    async def acquire(self, buckets: Sequence[Bucket], cost: int = 1) -> Outcome:
        return self.acquire_now(buckets, cost, monotonic_us())

    def acquire_now(self, buckets: Sequence[Bucket], cost: int, now: int) -> Outcome:
        outcome, new_tats = gcra([self._tats.get(b.key) for b in buckets], buckets, cost, now)
        if outcome.admitted and cost > 0:
            for bucket, tat in zip(buckets, new_tats, strict=True):
                self._tats[bucket.key] = tat
            if len(self._tats) >= self._sweep_at:
                self._sweep(now)
        return outcome

    async def charge(self, items: Sequence[Charge]) -> tuple[list[int | None], int]:
        now = monotonic_us()
        tats: list[int | None] = []
        for bucket, hits, floor in items:
            floor = min(floor, now)  # as charge.lua: never a floor in the future
            tat = max(self._tats.get(bucket.key, floor), floor) + hits * bucket.interval_us
            if hits and tat > now:  # at or before now it is full: nothing to keep
                self._tats[bucket.key] = tat
            tats.append(tat)
        if len(self._tats) >= self._sweep_at:
            self._sweep(now)
        return tats, now

    def _sweep(self, now: int) -> None:
        live = {k: t for k, t in self._tats.items() if t > now}
        if (excess := len(live) - self._max_entries) > 0:
            # Still too many live buckets: forget (reset to full) those closest to full, whose
            # reset grants the least. Forgetting the least recently charged instead forgot an
            # exhausted bucket first: one that keeps denying is never charged again.
            # Sorting the tats alone and filtering takes half the time of sorting the items;
            # of the buckets tied at the cutoff, the most recently charged stay.
            cutoff = sorted(live.values())[excess]
            kept = {k: t for k, t in live.items() if t > cutoff}
            tied = [k for k, t in live.items() if t == cutoff]
            kept.update((k, cutoff) for k in tied[len(tied) - (self._max_entries - len(kept)):])
            live = kept
        self._tats = live
        self._sweep_at = self._next_sweep(len(live))

    def _next_sweep(self, live: int) -> int:
        # Amortised O(1): sweep when the dict doubled, and at the latest a quarter past the
        # bound (below 1,024 entries too: a bound of 100 must not hold 1,023).
        return min(max(_MIN_SWEEP, 2 * live), self._max_entries * 5 // 4)
