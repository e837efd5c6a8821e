"""observe.plain: the hot-path counter and histogram expose what prometheus_client's own would."""

from __future__ import annotations

import enum

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from tenantgate.observe.plain import PlainCounter, PlainHistogram

BUCKETS = (0.001, 0.01, 0.1)


class Result(enum.StrEnum):
    HIT = "hit"


def _without_created(text: bytes) -> list[str]:
    return [line for line in text.decode().splitlines() if "_created" not in line]


def test_counter_exposes_the_same_samples_as_prometheus_client() -> None:
    plain_registry, reference_registry = CollectorRegistry(), CollectorRegistry()
    plain = PlainCounter("demo_lookups", "Lookups", ["result", "tenant"], plain_registry)
    reference = Counter("demo_lookups", "Lookups", ["result", "tenant"],
                        registry=reference_registry)
    for labels in [(Result.HIT, "acme"), (Result.HIT, "acme"), ("miss", "other")]:
        plain.inc(labels)
        reference.labels(*labels).inc()
    assert _without_created(generate_latest(plain_registry)) == _without_created(
        generate_latest(reference_registry))
    assert plain.value((Result.HIT, "acme")) == 2


@pytest.mark.parametrize("values", [[0.0005, 0.001, 0.0011, 0.5], [], [0.01, 0.01, 2.0]])
def test_histogram_exposes_the_same_buckets_count_and_sum(values: list[float]) -> None:
    plain_registry, reference_registry = CollectorRegistry(), CollectorRegistry()
    plain = PlainHistogram("demo_seconds", "Latency", BUCKETS, plain_registry)
    reference = Histogram("demo_seconds", "Latency", buckets=BUCKETS,
                          registry=reference_registry)
    for value in values:  # a value equal to a bound belongs to that bound's bucket
        plain.observe(value)
        reference.observe(value)
    assert _without_created(generate_latest(plain_registry)) == _without_created(
        generate_latest(reference_registry))


@pytest.mark.parametrize("buckets", [(0.1, 0.01), (0.1, 0.1), (0.1, float("inf"))])
def test_histogram_refuses_buckets_that_are_not_increasing_and_finite(
        buckets: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="increasing"):
        PlainHistogram("demo_bad_seconds", "x", buckets, CollectorRegistry())
