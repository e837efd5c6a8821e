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


class QuotaStore(Protocol):
    """Every implementation runs the same tests (tests/integration/quota/test_store_contract)."""

    name: str  # "memory" | "redis": the metric label

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def acquire(self, buckets: Sequence[Bucket], cost: int = 1) -> Outcome:
        """Charge `cost` to every bucket if all admit it, else charge none.

        Raises QuotaStoreUnavailable when the store cannot answer in time.
        """
        ...

    async def charge(self, items: Sequence[tuple[Bucket, int]]) -> tuple[list[int], int]:
        """Batched sync: charge hits unconditionally; returns each bucket's tat and the clock."""
        ...


def gcra(tats: Sequence[int | None], buckets: Sequence[Bucket], cost: int, now: int
         ) -> tuple[Outcome, list[int]]:
    """The reference GCRA that scripts/gcra.lua mirrors; returns the outcome and new tats."""
    states: list[BucketState] = []
    new_tats: list[int] = []
    admitted = True
    for stored, bucket in zip(tats, buckets, strict=True):
        interval, tolerance = bucket.interval_us, bucket.tolerance_us
        tat = max(stored or now, now)
        new_tat = tat + cost * interval
        retry = new_tat - tolerance - now
        if retry > 0:
            admitted = False
            states.append(BucketState(max(0, (tolerance - (tat - now)) // interval),
                                      tat - now, retry))
            new_tats.append(tat)
        else:
            states.append(BucketState((tolerance - (new_tat - now)) // interval, new_tat - now, 0))
            new_tats.append(new_tat)
    if not admitted:
        new_tats = [max(t or now, now) for t in tats]
    return Outcome(admitted, tuple(states), now), new_tats
