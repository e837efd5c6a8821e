"""Throttle: say a condition that can recur on every request at most once per interval."""

from __future__ import annotations

import math
import time


class Throttle:
    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._last = -math.inf  # the first time is always said

    def ready(self) -> bool:
        """True at most once per interval; the caller logs when it is."""
        now = time.monotonic()
        if now - self._last < self._seconds:
            return False
        self._last = now
        return True
