"""The quota store port: buckets in, an all-or-nothing GCRA outcome out; the reference GCRA."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Bucket:
    """One GCRA bucket of one tenant: `limit` per `period` s, holding `burst` at once."""

    key: str  # the store key, hash-tagged by tenant: tg:{t:<tenant>}:<scope>:<period>
    name: str  # policy name for headers and metrics, e.g. "pro-1s"
    limit: int
    period: float
    burst: int
    # Emission interval: one request's worth of time in whole µs, never below 1 µs. Rounded
    # up, so the enforced rate is at most the configured one (700000/s -> 2 µs). Computed
    # once here: every decision reads it.
    interval_us: int = field(init=False, repr=False, compare=False)
    tolerance_us: int = field(init=False, repr=False, compare=False)  # burst x interval

    def __post_init__(self) -> None:
        period_us = round(self.period * 1_000_000)  # periods are whole ms: exact in µs
        interval = max(1, -(-period_us // self.limit))
        object.__setattr__(self, "interval_us", interval)
        object.__setattr__(self, "tolerance_us", self.burst * interval)


# Not frozen (nor Outcome), like RequestView: built per Check, and a frozen dataclass pays
# an object.__setattr__ per field. Nothing assigns to one after it is built.
@dataclass(slots=True)
class BucketState:
    remaining: int  # requests still admitted at once after this decision
    reset_us: int  # until the bucket is full again
    retry_us: int  # until this request would pass; 0 when this bucket admitted it


@dataclass(slots=True)  # not frozen: as BucketState
class Outcome:
    admitted: bool
    states: tuple[BucketState, ...]  # one per bucket, in order
    now_us: int  # the store's clock when it decided

    @property
    def retry_us(self) -> int:
        return max((s.retry_us for s in self.states), default=0)


# One batched charge: the bucket, hits admitted locally, and the floor (store clock, µs) from
# which they count: the bucket's tat before them as the replica saw it, so that the time
# between admitting them and charging them is credited, as a store admitting them would have.
Charge = tuple[Bucket, int, int]


class QuotaStore(Protocol):
    """Every implementation runs the same tests (tests/integration/quota/test_store_contract)."""

    name: str  # "memory" | "redis": the metric label

    @property
    def failing(self) -> bool:
        """True from a failed call until one succeeds: the failure mode decides meanwhile."""
        ...

    @property
    def cause(self) -> str:
        """Why the last failed call failed, as its QuotaStoreUnavailable said (the store-down
        warning repeats it)."""
        ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def acquire(self, buckets: Sequence[Bucket], cost: int = 1) -> Outcome:
        """Charge `cost` to every bucket if all admit it, else charge none.

        Raises QuotaStoreUnavailable when the store cannot answer in time.
        """
        ...

    async def charge(self, items: Sequence[Charge]) -> tuple[list[int | None], int]:
        """Batched sync: charge each bucket its hits unconditionally, from
        max(tat, min(floor, now)). Returns each bucket's tat after its charge, None where that
        charge failed alone (not known to be made), and the store's clock.

        Raises QuotaStoreUnavailable when the store cannot answer in time or made none.
        """
        ...


def gcra(tats: Sequence[int | None], buckets: Sequence[Bucket], cost: int, now: int
         ) -> tuple[Outcome, list[int]]:
    """The reference GCRA that scripts/gcra.lua mirrors; returns the outcome and new tats."""
    current = [max(stored or now, now) for stored in tats]
    retries = [tat + cost * b.interval_us - b.tolerance_us - now
               for tat, b in zip(current, buckets, strict=True)]
    admitted = all(retry <= 0 for retry in retries)
    if not admitted:
        # Nothing is charged, so every bucket reports its state as it is, the ones that would
        # have admitted too: a replica's batched mirror learns from these.
        states = tuple(BucketState(max(0, (b.tolerance_us - (tat - now)) // b.interval_us),
                                   tat - now, max(0, retry))
                       for tat, retry, b in zip(current, retries, buckets, strict=True))
        return Outcome(False, states, now), current
    new_tats = [tat + cost * b.interval_us for tat, b in zip(current, buckets, strict=True)]
    states = tuple(BucketState((b.tolerance_us - (new_tat - now)) // b.interval_us,
                               new_tat - now, 0)
                   for new_tat, b in zip(new_tats, buckets, strict=True))
    return Outcome(True, states, now), new_tats
