"""The audit log: one JSON line per denial and per sampled allow; never a token or query string."""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass

from tenantgate.observe import metrics
from tenantgate.observe.sink import Sink, open_sink


@dataclass(frozen=True, slots=True)
class AuditRecord:
    request_id: str
    tenant: str | None
    subject: str | None
    issuer: str | None
    key_id: str | None
    method: str
    path: str  # without the query string: queries may carry secrets
    decision: str
    reason: str
    status: int
    latency_ms: float


_FIELDS = tuple(AuditRecord.__dataclass_fields__)
# Denials cost an attacker nothing and each writes a line: bounded lines, bounded rate.
MAX_PATH_CHARS = 1024
DEFAULT_MAX_LINES_PER_SECOND = 1000


class AuditLog:
    def __init__(self, path: str, sample_allow: float, enabled: bool = True,
                 max_lines_per_second: int = DEFAULT_MAX_LINES_PER_SECOND) -> None:
        self._enabled = enabled
        self._sample_allow = sample_allow
        self._max_per_second = max_lines_per_second  # 0: no cap
        self._second = 0  # the wall-clock second the count below belongs to
        self._lines_this_second = 0
        self._dropped = 0  # Check lines over the cap, reported in one line next second
        self._owns_sink = path != "-"  # standard output's sink is shared (sink.py)
        self._sink: Sink | None = open_sink(path) if enabled else None

    def wants(self, allowed: bool) -> bool:
        if not self._enabled:
            return False
        return not allowed or (self._sample_allow > 0 and random.random() < self._sample_allow)

    def write(self, record: AuditRecord) -> None:
        if (now := self._admit_line()) is None:
            return  # over the cap: the line is not even built
        fields: dict[str, object] = {name: getattr(record, name) for name in _FIELDS}
        if len(record.path) > MAX_PATH_CHARS:
            fields["path"] = record.path[:MAX_PATH_CHARS]
            fields["path_truncated"] = True
        self.write_event({"ts": round(now, 3), "event": "check", **fields})

    def write_capped(self, fields: dict[str, object]) -> None:
        """write_event, timestamped, under the lines-per-second cap that Check lines have: for
        other lines a client can cause at will (a revoked API key's use)."""
        if (now := self._admit_line()) is not None:
            self.write_event({"ts": round(now, 3), **fields})

    def _admit_line(self) -> float | None:
        """The time to stamp a capped line with, or None when this second's lines are used up
        (the line is counted as dropped and reported in the next second)."""
        now = time.time()
        if int(now) != self._second:
            self._second, self._lines_this_second = int(now), 0
            if self._dropped:
                self.write_event({"ts": round(now, 3), "event": "audit_lines_dropped",
                                  "count": self._dropped,
                                  "max_lines_per_second": self._max_per_second})
                self._dropped = 0
        if self._max_per_second and self._lines_this_second >= self._max_per_second:
            self._dropped += 1
            metrics.AUDIT_LINES_DROPPED.inc()
            return None
        self._lines_this_second += 1
        return now

    def write_event(self, fields: dict[str, object]) -> None:
        if self._sink is None:
            return
        line = json.dumps(fields, separators=(",", ":"), ensure_ascii=True) + "\n"
        self._sink.put(line.encode("ascii"))  # never waits: a line that cannot go is counted

    def close(self) -> None:
        """Closes the audit file; lines still queued for a pipe are written after."""
        if self._sink is not None and self._owns_sink:
            self._sink.close()

    def wait_closed(self, timeout: float) -> bool:
        """After close(): whether every line was written (or counted lost) within timeout."""
        return self._sink is None or self._sink.wait_closed(timeout)
