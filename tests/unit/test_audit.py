"""The audit log: lost lines, long paths, and the rate cap that keeps a flood of denials
from filling the disk."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from tenantgate.observe import audit as audit_module
from tenantgate.observe import metrics
from tenantgate.observe.audit import MAX_PATH_CHARS, AuditLog, AuditRecord

RECORD = AuditRecord(request_id="r-1", tenant="acme", subject="u", issuer="idp", key_id=None,
                     method="GET", path="/notes", decision="deny", reason="scope_missing",
                     status=403, latency_ms=0.1)


def lost() -> float:
    return metrics.AUDIT_WRITE_ERRORS._value.get()


def test_a_full_disk_loses_the_line_counts_it_and_raises_nothing(
        caplog: pytest.LogCaptureFixture) -> None:
    # /dev/full fails every write with ENOSPC. Before, the OSError escaped Check as gRPC
    # UNKNOWN: each denial became Envoy's error status and each sampled allow a denial.
    audit = AuditLog("/dev/full", sample_allow=1.0)
    before = lost()
    audit.write(RECORD)
    audit.write(RECORD)
    assert lost() == before + 2
    assert [r.message for r in caplog.records].count(
        "audit log not writable: lines are being lost") == 1  # said once, not per line
    audit.close()


def test_a_closed_stream_is_a_lost_line_too() -> None:
    audit = AuditLog("/dev/null", sample_allow=1.0)
    audit._stream.close()  # what a closed stdout looks like to the writer
    before = lost()
    audit.write(RECORD)
    assert lost() == before + 1


def test_a_long_path_is_cut_and_marked(tmp_path: Path) -> None:
    # An unauthenticated 50,000-character path made a 50 KB line per denial (pentest).
    log_file = tmp_path / "audit.log"
    audit = AuditLog(str(log_file), sample_allow=1.0)
    audit.write(replace(RECORD, path="/notes/" + "a" * 50_000))
    audit.close()
    [line] = [json.loads(text) for text in log_file.read_text().splitlines()]
    assert len(line["path"]) == MAX_PATH_CHARS and line["path_truncated"] is True


def test_lines_over_the_rate_cap_are_dropped_counted_and_reported_next_second(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1_800_000_000.2]
    monkeypatch.setattr(audit_module.time, "time", lambda: clock[0])
    log_file = tmp_path / "audit.log"
    audit = AuditLog(str(log_file), sample_allow=1.0, max_lines_per_second=3)
    before = metrics.AUDIT_LINES_DROPPED._value.get()
    for _ in range(10):
        audit.write(RECORD)
    clock[0] += 1.0
    audit.write(RECORD)
    audit.close()
    lines = [json.loads(text) for text in log_file.read_text().splitlines()]
    assert [line["event"] for line in lines] == ["check"] * 3 + ["audit_lines_dropped", "check"]
    assert lines[3]["count"] == 7
    assert metrics.AUDIT_LINES_DROPPED._value.get() == before + 7
