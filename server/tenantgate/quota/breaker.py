"""A circuit breaker: a dead store must not add its timeout to every request."""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class CircuitBreaker:
    """Closed -> open after `failures` consecutive errors; after `open_for` one probe may pass:
    its success closes the circuit, its failure opens it again.

    Errors count once per cause: a call that was already in flight when an error was counted
    fails with it (one stall, one lost connection drops every round on the socket), so its
    error does not count again. Otherwise one 150 ms Redis pause under load, failing a dozen
    rounds at once, would open the circuit and refuse every request for `open_for`.
    """

    def __init__(self, failures: int, open_for: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._threshold = failures
        self._open_for = open_for
        self.clock = clock  # callers read it to say when a call started (see failure())
        self._failures = 0
        self._open_until: float | None = None
        self._probing = False
        self._counted_at = -math.inf  # when the last counted error was reported

    @property
    def is_open(self) -> bool:
        return self._open_until is not None

    @property
    def failing(self) -> bool:
        """From a failed call until one succeeds, open or not."""
        return self._failures > 0 or self._open_until is not None

    def allow(self) -> bool:
        if self._open_until is None:
            return True
        if self._probing or self.clock() < self._open_until:
            return False
        self._probing = True  # half-open: exactly one caller probes the store
        return True

    def success(self) -> None:
        self._failures = 0
        self._open_until = None
        self._probing = False

    def failure(self, started: float | None = None) -> None:
        """A call failed; `started` is when it began (self.clock), if the caller knows."""
        if started is not None and started < self._counted_at:
            return  # in flight when the last error was counted: the same cause
        self._counted_at = self.clock()
        self._failures += 1
        self._probing = False
        if self._open_until is not None or self._failures >= self._threshold:
            self._open_until = self._counted_at + self._open_for
