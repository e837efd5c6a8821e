"""The audit log: one JSON line per denial and per sampled allow; never a token or query string."""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii

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
# Denials cost an attacker nothing and each writes a line: bounded lines, bounded rate. A
# bound in characters bounds nothing in bytes (one escaped character is up to 12 bytes,
# "\ud83d\ude00"), so each free-text field has a bound in bytes as written; a longer value
# is cut to fit and marked `<field>_truncated`.
FIELD_BYTES: dict[str, int] = {
    "request_id": 256,  # Check keeps at most 128 characters: any printable ASCII one fits
    "tenant": 255,  # a tenant id: at most 255 characters, none of which JSON escapes
    "subject": 512,  # OpenID Connect: at most 255 ASCII characters, so any such one fits
    "issuer": 64,  # a config name: at most 64 characters, none of which JSON escapes
    "key_id": 128,  # an API key id (16 hex digits) or a JWT's kid, any string its IdP chose
    "method": 32,  # Check refuses longer ones (pipeline.sanitize); the line still names them
    "path": 1024,
}
# The longest line write() or write_capped() can make with those bounds (a test builds it): a
# class's lines take at most max_lines_per_second times this many bytes a second.
MAX_LINE_BYTES = 3072
DEFAULT_MAX_LINES_PER_SECOND = 1000


# One caller's share of a class's cap: a tenant cannot push out other tenants' denials (or
# the cross-tenant probes of another) with denials its own valid token makes for free.
TENANT_SHARE = 4  # at most 1/TENANT_SHARE of the class's lines per second


class _Budget:
    """One class of capped lines: its lines this second, and those dropped since reported.

    Four classes, each with the whole cap, so a flood of one cannot push out another: lines
    of callers without a verified identity (no credential, a forged or expired token, a
    revoked API key: free to send, from anywhere), `cross_tenant_path` denials (the lines
    TenantgateCrossTenantAttempts sends operators to), a verified caller's other denials,
    and sampled allows. In the two classes of verified denials, each caller, by issuer and
    the tenant it was verified for, has a share: by the tenant claimed, an issuer that may
    not speak for a tenant could use up that tenant's share, or claim a new tenant each time.
    """

    __slots__ = ("counter", "dropped", "name", "per_caller", "used")

    def __init__(self, name: str, shared: bool) -> None:
        self.name = name
        self.used = 0
        self.dropped = 0
        self.counter = metrics.AUDIT_LINES_DROPPED.labels(name)
        # Lines this second per (issuer, tenant); None: no shares in this class.
        self.per_caller: dict[tuple[str | None, str | None], int] | None = (
            {} if shared else None)


class AuditLog:
    def __init__(self, path: str, sample_allow: float, enabled: bool = True,
                 max_lines_per_second: int = DEFAULT_MAX_LINES_PER_SECOND,
                 wait_for_reader: bool = True) -> None:
        """`wait_for_reader` False: a FIFO with no reader is an OSError (see open_sink)."""
        self._enabled = enabled
        self._sample_allow = sample_allow
        self._max_per_second = max_lines_per_second  # per class; 0: no cap
        self._second = 0  # the wall-clock second the budgets' counts belong to
        self._anonymous = _Budget("anonymous", shared=False)
        self._cross_tenant = _Budget("cross_tenant", shared=True)
        self._identified = _Budget("identified", shared=True)
        self._sampled_allow = _Budget("sampled_allow", shared=False)
        self._budgets = (self._anonymous, self._cross_tenant, self._identified,
                         self._sampled_allow)
        self._owns_sink = path != "-"  # standard output's sink is shared (sink.py)
        self._sink: Sink | None = open_sink(path, wait_for_reader) if enabled else None

    def wants(self, allowed: bool) -> bool:
        if not self._enabled:
            return False
        return not allowed or (self._sample_allow > 0 and random.random() < self._sample_allow)

    def write(self, record: AuditRecord, cross_tenant: bool = False,
              tenant: str | None = None) -> None:
        """`cross_tenant`: the denial is a request for another tenant's path. `tenant`: the
        tenant the caller was verified for (None if the tenant stage refused it), which with
        the issuer names its share: the line's own tenant may be only what the token claimed,
        and an issuer claiming a new tenant each time would get a new share each time."""
        if record.subject is None:
            budget = self._anonymous
        elif record.decision == "allow":
            budget = self._sampled_allow
        elif cross_tenant:
            budget = self._cross_tenant
        else:
            budget = self._identified
        if (now := self._admit_line(budget, (record.issuer, tenant))) is None:
            return  # over the cap: the line is not even built
        fields: dict[str, object] = {name: getattr(record, name) for name in _FIELDS}
        self.write_event({"ts": round(now, 3), "event": "check", **_bounded(fields)})

    def write_capped(self, fields: dict[str, object]) -> None:
        """write_event, timestamped, under the cap of lines without a verified identity: for
        security events a client can repeat at will (a revoked API key's use: it verifies
        nobody, and whoever holds a leaked key must not crowd out verified callers' lines)."""
        if (now := self._admit_line(self._anonymous)) is not None:
            self.write_event({"ts": round(now, 3), **_bounded(dict(fields))})

    def _admit_line(self, budget: _Budget,
                    caller: tuple[str | None, str | None] = (None, None)) -> float | None:
        """The time to stamp a capped line with, or None when this second's lines of its
        class, or the caller's share of them, are used up (the line is counted as dropped and
        reported in the next second)."""
        now = time.time()
        if int(now) != self._second:
            self._new_second(now)
        if self._max_per_second:
            if budget.used >= self._max_per_second:
                return self._drop(budget)
            if budget.per_caller is not None:
                share = max(1, self._max_per_second // TENANT_SHARE)
                if (used := budget.per_caller.get(caller, 0)) >= share:
                    return self._drop(budget)
                budget.per_caller[caller] = used + 1
        budget.used += 1
        return now

    @staticmethod
    def _drop(budget: _Budget) -> None:
        budget.dropped += 1
        budget.counter.inc()

    def _new_second(self, now: float) -> None:
        self._second = int(now)
        for budget in self._budgets:
            if budget.per_caller:
                budget.per_caller.clear()
            if budget.dropped:
                self.write_event({"ts": round(now, 3), "event": "audit_lines_dropped",
                                  "class": budget.name, "count": budget.dropped,
                                  "max_lines_per_second": self._max_per_second})
            budget.used = budget.dropped = 0

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


def _bounded(fields: dict[str, object]) -> dict[str, object]:
    """`fields` with each one named in FIELD_BYTES cut to fit it as written, and marked."""
    for name, limit, any_text, ascii_text in _BOUNDS:
        value = fields.get(name)
        # Sure without escaping anything, for the usual short value: no character is written
        # as more than 12 bytes, no ASCII one (a control character) as more than 6.
        if (not isinstance(value, str) or len(value) <= any_text
                or (len(value) <= ascii_text and value.isascii())):
            continue
        # Longer than the bound in characters is too long escaped too (each character is at
        # least one byte), and escaping a megabyte path whole cost a millisecond per line.
        if len(value) > limit or _escaped_bytes(value) > limit:
            fields[name] = _cut(value, limit)
            fields[f"{name}_truncated"] = True
    return fields


# (field, its bound in bytes, the most characters of any kind or of ASCII that surely fit)
_BOUNDS = tuple((name, limit, limit // 12, limit // 6) for name, limit in FIELD_BYTES.items())


def _escaped_bytes(text: str) -> int:
    # What write_event's json.dumps(ensure_ascii=True) writes for a string (in C), unquoted.
    return len(encode_basestring_ascii(text)) - 2


def _cut(text: str, limit: int) -> str:
    """The longest start of `text` whose escaped form has at most `limit` bytes."""
    low, high = 0, min(len(text), limit)  # an escaped character has at least one byte
    while low < high:  # the escaped length only grows with the length of the start
        middle = (low + high + 1) // 2
        if _escaped_bytes(text[:middle]) <= limit:
            low = middle
        else:
            high = middle - 1
    return text[:low]
