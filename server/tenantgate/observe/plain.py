"""Counters and a histogram for the per-Check hot path, kept as plain ints and floats.

prometheus_client's Counter and Histogram take a lock on every inc() and observe(), and each
call runs several Python frames: on a cached Check that cost more than the Check's own
decision. These keep the numbers in a dict or list and hand them to prometheus_client only
when it scrapes, through its custom-collector interface, so names, labels and the exposition
format are the same as before.

Only the event loop's thread may write to them: an increment here is a read and a store,
not atomic across threads. The scrape (another thread) copies the values first and only
reads, so at worst it sees a Check counted a moment late.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client.core import REGISTRY, CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString


class PlainCounter(Collector):
    """A counter family; `inc` takes one label value per label name, as a tuple."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = (),
                 registry: CollectorRegistry | None = REGISTRY) -> None:
        self._name = name
        self._documentation = documentation
        self._labelnames = tuple(labelnames)
        self._counts: dict[tuple[str, ...], int] = {}
        if registry is not None:
            registry.register(self)

    def inc(self, labels: tuple[str, ...] = ()) -> None:
        counts = self._counts
        counts[labels] = counts.get(labels, 0) + 1

    def value(self, labels: tuple[str, ...] = ()) -> int:
        return self._counts.get(labels, 0)

    def describe(self) -> list[CounterMetricFamily]:
        # Without describe() the registry calls collect() to learn the names at register time.
        return [CounterMetricFamily(self._name, self._documentation, labels=self._labelnames)]

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(self._name, self._documentation, labels=self._labelnames)
        for labels, count in list(self._counts.items()):  # a copy: the loop may add a key
            family.add_metric([str(v) for v in labels], count)  # enum label values as text
        yield family


class PlainHistogram(Collector):
    """A histogram without labels, cumulative buckets computed at scrape time."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float],
                 registry: CollectorRegistry | None = REGISTRY) -> None:
        bounds = tuple(float(b) for b in buckets)
        if list(bounds) != sorted(set(bounds)) or bounds[-1] == float("inf"):
            raise ValueError("buckets must be increasing and finite (+Inf is implied)")
        self._name = name
        self._documentation = documentation
        self._labelnames = ()  # as prometheus_client's collectors name them
        self._bounds = bounds
        self._counts = [0] * (len(bounds) + 1)  # the last one: above every bound
        self._sum = 0.0
        if registry is not None:
            registry.register(self)

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bucket (`le` is inclusive).
        self._counts[bisect_left(self._bounds, value)] += 1
        self._sum += value

    def describe(self) -> list[HistogramMetricFamily]:
        return [HistogramMetricFamily(self._name, self._documentation)]

    def collect(self) -> Iterator[HistogramMetricFamily]:
        counts, total_sum = list(self._counts), self._sum
        cumulative, buckets = 0, []
        for bound, count in zip((*self._bounds, float("inf")), counts, strict=True):
            cumulative += count
            buckets.append((floatToGoString(bound), cumulative))
        yield HistogramMetricFamily(self._name, self._documentation, buckets=buckets,
                                    sum_value=total_sum)
