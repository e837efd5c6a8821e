"""The wait between retries of a dependency that keeps failing: doubled per failure up to a cap,
jittered so that replicas that failed together (a restart, an outage) do not retry together."""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """Delays for failures in a row: `first`, doubled per further failure up to `cap`, each less
    a random part of up to half (`jitter` returns a number in [0, 1); a test passes one that
    returns 0.0), never below `floor`. reset() after a success starts over at `first`."""

    def __init__(self, first: float, cap: float, jitter: Callable[[], float] = random.random,
                 *, floor: float = 0.0) -> None:
        self.first, self.cap, self.floor = first, cap, floor
        self._jitter = jitter
        self.failures = 0  # delays given since the last reset

    def next_delay(self) -> float:
        self.failures += 1
        delay = min(self.first * 2.0 ** min(self.failures - 1, 64), self.cap)  # 64: no overflow
        return max(delay * (1.0 - self._jitter() / 2), self.floor)

    def reset(self) -> None:
        self.failures = 0
