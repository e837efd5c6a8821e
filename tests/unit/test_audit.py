"""The audit log: what happens when a line cannot be written."""

from __future__ import annotations

import pytest
from tenantgate.observe import metrics
from tenantgate.observe.audit import AuditLog, AuditRecord

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
