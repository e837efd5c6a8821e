"""The retry backoff the JWKS fetches and the API-key revocation subscriber share."""

from __future__ import annotations

import pytest
from tenantgate.identity.backoff import Backoff


def delays(backoff: Backoff, count: int) -> list[float]:
    return [backoff.next_delay() for _ in range(count)]


def test_doubles_from_first_up_to_the_cap() -> None:
    assert delays(Backoff(0.5, 30.0, lambda: 0.0), 9) == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]


def test_many_failures_in_a_row_do_not_overflow() -> None:
    backoff = Backoff(1.0, 60.0, lambda: 0.0)
    backoff.failures = 10**6
    assert backoff.next_delay() == 60


@pytest.mark.parametrize(("jitter", "expected"), [
    pytest.param(0.0, [1, 2, 4, 8], id="none"),
    pytest.param(0.5, [0.75, 1.5, 3, 6], id="a-quarter-off"),
    pytest.param(0.999, [pytest.approx(0.5, abs=0.01), pytest.approx(1, abs=0.01),
                         pytest.approx(2, abs=0.01), pytest.approx(4, abs=0.01)],
                 id="almost-half-off"),
])
def test_jitter_takes_off_up_to_half_of_each_delay(jitter: float, expected: list[float]) -> None:
    assert delays(Backoff(1.0, 60.0, lambda: jitter), 4) == expected


def test_never_below_the_floor() -> None:
    waits = delays(Backoff(1.0, 60.0, lambda: 0.999, floor=1.0), 3)
    assert waits == [1, pytest.approx(1, abs=0.01), pytest.approx(2, abs=0.01)]
    assert min(waits) == 1


def test_reset_starts_over_at_first() -> None:
    backoff = Backoff(0.5, 30.0, lambda: 0.0)
    delays(backoff, 5)
    backoff.reset()
    assert delays(backoff, 2) == [0.5, 1]
