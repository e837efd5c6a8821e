"""The audit log: one JSON line per denial and per sampled allow; never a token or query string."""

from __future__ import annotations

import contextlib
import json
import logging
import random
import sys
import time
from dataclasses import dataclass
from typing import IO

from tenantgate.observe import metrics
from tenantgate.observe.throttle import Throttle

log = logging.getLogger("tenantgate.audit")


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
        self._own_stream = enabled and path != "-"
        self._stream: IO[str] = (open(path, "a", encoding="utf-8")  # noqa: SIM115
                                 if self._own_stream else sys.stdout)
        self._unwritable = Throttle(60.0)  # one log line a minute while lines are lost

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
        if not self._enabled:
            return
        line = json.dumps(fields, separators=(",", ":"), ensure_ascii=True) + "\n"
        try:
            self._stream.write(line)
            self._stream.flush()
        except (OSError, ValueError):  # disk full, a closed pipe or stream
            # The decision stands (the audit log records decisions, it does not make them);
            # the lost line is counted, alerted on (TenantgateAuditWriteErrors) and said.
            metrics.AUDIT_WRITE_ERRORS.inc()
            if self._unwritable.ready():
                log.error("audit log not writable: lines are being lost", exc_info=True)

    def close(self) -> None:
        if self._own_stream:
            # Closing flushes again what a failed write left buffered: already counted lost.
            with contextlib.suppress(OSError, ValueError):
                self._stream.close()
