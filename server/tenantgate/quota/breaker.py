"""A circuit breaker: a dead store must not add its timeout to every request."""

from __future__ import annotations

import time
from collections.abc import Callable


class CircuitBreaker:
    """Closed -> open after `failures` consecutive errors; after `open_for` one probe may pass:
    its success closes the circuit, its failure opens it again."""

    def __init__(self, failures: int, open_for: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._threshold = failures
        self._open_for = open_for
        self._clock = clock
        self._failures = 0
        self._open_until: float | None = None
        self._probing = False

    @property
    def is_open(self) -> bool:
        return self._open_until is not None

    def allow(self) -> bool:
        if self._open_until is None:
            return True
        if self._probing or self._clock() < self._open_until:
            return False
        self._probing = True  # half-open: exactly one caller probes the store
        return True

    def success(self) -> None:
        self._failures = 0
        self._open_until = None
        self._probing = False

    def failure(self) -> None:
        self._failures += 1
        self._probing = False
        if self._open_until is not None or self._failures >= self._threshold:
            self._open_until = self._clock() + self._open_for
