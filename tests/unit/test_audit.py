"""The audit log: lost lines, long fields, a reader that stops reading, and the rate caps that
keep a flood of denials from filling the disk or pushing out the lines that matter."""

from __future__ import annotations

import errno
import json
import logging
import os
import select
import socket
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from tenantgate.observe import audit as audit_module
from tenantgate.observe import metrics, sink
from tenantgate.observe.audit import FIELD_BYTES, AuditLog, AuditRecord

RECORD = AuditRecord(request_id="r-1", tenant="acme", subject="u", issuer="idp", key_id=None,
                     method="GET", path="/notes", decision="deny", reason="scope_missing",
                     status=403, latency_ms=0.1)
ANONYMOUS = replace(RECORD, tenant=None, subject=None, issuer=None, reason="no_credential",
                    status=401)
HANG_GUARD_SECONDS = 60.0  # only ends a test that would otherwise hang; nothing is timed


def lost() -> float:
    return metrics.AUDIT_WRITE_ERRORS._value.get()


def dropped(line_class: str) -> float:
    value = REGISTRY.get_sample_value("tenantgate_audit_lines_dropped_total",
                                      {"class": line_class})
    return value or 0.0


def closed(audit: AuditLog) -> None:
    audit.close()
    assert audit.wait_closed(HANG_GUARD_SECONDS)


def test_a_full_disk_loses_the_line_counts_it_and_raises_nothing(
        caplog: pytest.LogCaptureFixture) -> None:
    # /dev/full fails every write with ENOSPC. Before, the OSError escaped Check as gRPC
    # UNKNOWN: each denial became Envoy's error status and each sampled allow a denial.
    audit = AuditLog("/dev/full", sample_allow=1.0)
    before = lost()
    audit.write(RECORD)
    audit.write(RECORD)
    closed(audit)
    assert lost() == before + 2
    assert [r.message for r in caplog.records].count(
        "audit log not writable: lines are being lost") == 1  # said once, not per line


def test_a_line_after_close_is_lost_and_counted(tmp_path: Path) -> None:
    audit = AuditLog(str(tmp_path / "audit.log"), sample_allow=1.0)
    closed(audit)
    before = lost()
    audit.write(RECORD)  # never into whatever file reuses the closed descriptor
    assert lost() == before + 1
    assert (tmp_path / "audit.log").read_text() == ""


_FILE_SIZE_LIMITED = """
import json, resource, sys
from tenantgate.observe import metrics
from tenantgate.observe.audit import AuditLog
audit = AuditLog(sys.argv[1], sample_allow=1.0, max_lines_per_second=0)
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))  # a disk that fills at 4 KiB
for _ in range(40):  # 256-byte lines: 16 fit whole, the 17th fails at once
    audit.write_event({"event": "check", "pad": "x" * 229})
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # space is freed
audit.write_event({"event": "check", "pad": "after"})
audit.close()
print(json.dumps(metrics.AUDIT_WRITE_ERRORS._value.get()))
"""


def test_a_line_counted_lost_on_a_full_disk_is_not_written_later(tmp_path: Path) -> None:
    # Python's file buffer kept a line whose write failed and wrote it with the next one once
    # space came back: counted lost and in the file too. A subprocess: the file size limit
    # that stands for the full disk holds for every file of the process.
    log_file = tmp_path / "audit.log"
    run = subprocess.run([sys.executable, "-c", _FILE_SIZE_LIMITED, str(log_file)],
                         capture_output=True, text=True, check=True)
    counted_lost = json.loads(run.stdout)
    written = log_file.read_text().splitlines()
    assert (len(written), counted_lost) == (17, 24)
    assert written[-1] == '{"event":"check","pad":"after"}'


_TORN_BY_FULL_DISK = """
import resource, sys
from tenantgate.observe.audit import AuditLog
audit = AuditLog(sys.argv[1], sample_allow=1.0, max_lines_per_second=0)
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))  # a disk that fills at 4 KiB
for _ in range(20):  # 300-byte lines: 13 fit whole, the 14th is cut after 196 bytes
    audit.write_event({"event": "check", "pad": "x" * 273})
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # space is freed
audit.write_event({"event": "check", "pad": "after"})
audit.close()
"""


def test_a_line_cut_by_a_full_disk_does_not_swallow_the_next_one(tmp_path: Path) -> None:
    # The 14th line's first 196 bytes stayed in the file without a newline, and the first
    # line written once space came back was glued to them: one unreadable line, counted as
    # written. Now it starts on a line of its own.
    log_file = tmp_path / "audit.log"
    subprocess.run([sys.executable, "-c", _TORN_BY_FULL_DISK, str(log_file)], check=True)
    *whole, fragment, last = log_file.read_text().splitlines()
    assert len(whole) == 13 and all(json.loads(line)["pad"] for line in whole)
    assert len(fragment) == 196
    assert last == '{"event":"check","pad":"after"}'


def test_a_long_path_is_cut_and_marked(tmp_path: Path) -> None:
    # An unauthenticated 50,000-character path made a 50 KB line per denial (pentest).
    log_file = tmp_path / "audit.log"
    audit = AuditLog(str(log_file), sample_allow=1.0)
    audit.write(replace(RECORD, path="/notes/" + "a" * 50_000))
    closed(audit)
    [line] = [json.loads(text) for text in log_file.read_text().splitlines()]
    assert len(line["path"]) == FIELD_BYTES["path"] and line["path_truncated"] is True


def test_a_long_method_is_cut_and_marked(tmp_path: Path) -> None:
    # Envoy passes a 60 KB upper-case method; it was written whole into each denial's line.
    log_file = tmp_path / "audit.log"
    audit = AuditLog(str(log_file), sample_allow=1.0)
    audit.write(replace(ANONYMOUS, method="A" * 60_000))
    audit.write(replace(ANONYMOUS, method="UPDATEREDIRECTREF"))  # the longest registered one
    closed(audit)
    long, short = [json.loads(text) for text in log_file.read_text().splitlines()]
    assert len(long["method"]) == FIELD_BYTES["method"] and long["method_truncated"] is True
    assert short["method"] == "UPDATEREDIRECTREF" and "method_truncated" not in short


def test_lines_over_the_rate_cap_are_dropped_counted_and_reported_next_second(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1_800_000_000.2]
    monkeypatch.setattr(audit_module.time, "time", lambda: clock[0])
    log_file = tmp_path / "audit.log"
    audit = AuditLog(str(log_file), sample_allow=1.0, max_lines_per_second=3)
    before = dropped("identified")
    for n in range(10):  # ten tenants: the class's cap, not a tenant's share, is what stops
        audit.write(replace(RECORD, tenant=f"t{n}"), tenant=f"t{n}")
    clock[0] += 1.0
    audit.write(RECORD)
    closed(audit)
    lines = [json.loads(text) for text in log_file.read_text().splitlines()]
    assert [line["event"] for line in lines] == ["check"] * 3 + ["audit_lines_dropped", "check"]
    assert [line.get("tenant") for line in lines[:3]] == ["t0", "t1", "t2"]
    assert (lines[3]["class"], lines[3]["count"]) == ("identified", 7)
    assert dropped("identified") == before + 7


def _written(log_file: Path) -> list[tuple[str | None, str]]:
    lines = [json.loads(text) for text in log_file.read_text().splitlines()]
    return [(line.get("tenant"), line.get("reason", line["event"])) for line in lines]


def test_one_tenants_denials_do_not_push_out_another_tenants_lines(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A valid token makes route and role denials for free, before any quota: one tenant's
    # flood used the whole verified budget, and every other tenant's lines were dropped.
    monkeypatch.setattr(audit_module.time, "time", lambda: 1_800_000_000.2)
    log_file = tmp_path / "audit.log"
    audit = AuditLog(str(log_file), sample_allow=1.0, max_lines_per_second=8)  # share: 2
    before = dropped("identified")
    for _ in range(10):
        audit.write(RECORD, tenant="acme")
    audit.write(replace(RECORD, tenant="globex", reason="role_missing"), tenant="globex")
    closed(audit)
    assert _written(log_file) == [("acme", "scope_missing")] * 2 + [("globex", "role_missing")]
    assert dropped("identified") == before + 8


def test_a_tenants_denials_do_not_push_out_cross_tenant_lines(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # TenantgateCrossTenantAttempts sends operators to these lines: they have a class of their
    # own, which denials of any other kind cannot use up.
    monkeypatch.setattr(audit_module.time, "time", lambda: 1_800_000_000.2)
    log_file = tmp_path / "audit.log"
    audit = AuditLog(str(log_file), sample_allow=1.0, max_lines_per_second=4)  # share: 1
    for n in range(10):
        audit.write(replace(RECORD, tenant=f"t{n}"), tenant=f"t{n}")
    audit.write(replace(RECORD, reason="cross_tenant_path", status=404), cross_tenant=True,
                tenant="acme")
    closed(audit)
    assert _written(log_file)[-1] == ("acme", "cross_tenant_path")
    assert len(_written(log_file)) == 5


def test_one_tenants_cross_tenant_probes_do_not_hide_another_tenants(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit_module.time, "time", lambda: 1_800_000_000.2)
    log_file = tmp_path / "audit.log"
    audit = AuditLog(str(log_file), sample_allow=1.0, max_lines_per_second=8)  # share: 2
    before = dropped("cross_tenant")
    probe = replace(RECORD, reason="cross_tenant_path", status=404)
    for _ in range(10):
        audit.write(probe, cross_tenant=True, tenant="acme")
    audit.write(replace(probe, tenant="globex"), cross_tenant=True, tenant="globex")
    closed(audit)
    assert _written(log_file) == [("acme", "cross_tenant_path")] * 2 + [
        ("globex", "cross_tenant_path")]
    assert dropped("cross_tenant") == before + 8


def test_a_flood_without_credentials_does_not_push_out_verified_callers_lines(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # One budget for all: 1000 anonymous denials at the start of a second left no room for
    # the cross-tenant attempts of an authenticated tenant.
    monkeypatch.setattr(audit_module.time, "time", lambda: 1_800_000_000.2)
    log_file = tmp_path / "audit.log"
    audit = AuditLog(str(log_file), sample_allow=1.0, max_lines_per_second=3)
    before = dropped("anonymous")
    for _ in range(10):
        audit.write(ANONYMOUS)
    audit.write(replace(RECORD, reason="cross_tenant_path", status=404))
    closed(audit)
    lines = [json.loads(text) for text in log_file.read_text().splitlines()]
    assert [line["reason"] for line in lines] == ["no_credential"] * 3 + ["cross_tenant_path"]
    assert dropped("anonymous") == before + 7


def test_a_revoked_keys_replays_do_not_push_out_verified_callers_lines(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A revoked key verifies nobody, and whoever holds a leaked one may replay it at will: its
    # lines share the budget of the unverified, not the verified callers'.
    monkeypatch.setattr(audit_module.time, "time", lambda: 1_800_000_000.2)
    log_file = tmp_path / "audit.log"
    audit = AuditLog(str(log_file), sample_allow=1.0, max_lines_per_second=3)
    for _ in range(10):
        audit.write_capped({"event": "apikey_revoked_used", "key_id": "k", "tenant": "acme"})
    audit.write(replace(RECORD, reason="cross_tenant_path", status=404))
    closed(audit)
    lines = [json.loads(text) for text in log_file.read_text().splitlines()]
    assert [line.get("reason", line["event"]) for line in lines] == [
        "apikey_revoked_used"] * 3 + ["cross_tenant_path"]


def _stalled_fifo(tmp_path: Path) -> tuple[str, int]:
    """A FIFO with a reader that reads nothing until told: a log collector that stopped."""
    path = str(tmp_path / "collector")
    os.mkfifo(path)
    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # so that opening to write returns
    os.set_blocking(reader, True)
    return path, reader


def _read_to_end(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


def test_a_reader_that_stops_never_blocks_the_writer_and_every_line_is_kept_or_counted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    # Written in place, the 263rd line filled the pipe and write() blocked the event loop:
    # every Check, ShouldRateLimit and health call stopped, and no error was counted.
    monkeypatch.setattr(sink, "MAX_QUEUED_BYTES", 32_768)  # ~100 lines
    path, reader = _stalled_fifo(tmp_path)
    audit = AuditLog(path, sample_allow=1.0, max_lines_per_second=0)
    before, total = lost(), 2000  # ~500 KB: far more than the pipe and the queue hold

    def write_all() -> None:
        for i in range(total):
            audit.write(replace(RECORD, request_id=f"r-{i}", path="/" + "p" * 200))

    writer = threading.Thread(target=write_all, daemon=True, name="the-event-loop")
    with caplog.at_level(logging.ERROR, logger="tenantgate.audit"):
        writer.start()
        writer.join(HANG_GUARD_SECONDS)
        assert not writer.is_alive(), "a write waited for the stalled reader"
        # Nor did it log: standard error's reader may have stalled with standard output's.
        assert [r for r in caplog.records if r.threadName == "the-event-loop"] == []
        audit.close()  # what is queued is written once the reader reads again
        kept = _read_to_end(reader).decode().splitlines()
        assert audit.wait_closed(HANG_GUARD_SECONDS)
    # The writer thread said it, once the reader came back.
    assert [r.threadName for r in caplog.records] == ["tenantgate-audit"]
    assert lost() - before > 0
    assert len(kept) + (lost() - before) == total
    ids = [int(json.loads(line)["request_id"][2:]) for line in kept]
    assert ids == sorted(ids)  # in order, whole lines


def test_a_closed_sink_whose_reader_never_comes_back_ends_and_counts_what_it_held(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A reload closes the old sink. Its writer thread blocked in write() for good, holding the
    # descriptor and up to MAX_QUEUED_BYTES of lines: one more of each per reload.
    monkeypatch.setattr(sink, "CLOSED_WRITER_GRACE_SECONDS", 0.5)
    # Each wait for the reader is one 10 s poll: past the grace, the ~50 batches left must not
    # each wait one (the guard below would run out long before).
    monkeypatch.setattr(sink, "_POLL_MS", 10_000)
    path, reader = _stalled_fifo(tmp_path)
    audit = AuditLog(path, sample_allow=1.0, max_lines_per_second=0)
    before, total = lost(), 1000  # ~250 KB: several times what the pipe holds
    for i in range(total):
        audit.write(replace(RECORD, request_id=f"r-{i}", path="/" + "p" * 200))
    audit.close()
    assert audit.wait_closed(HANG_GUARD_SECONDS), "the writer still waits for its reader"
    kept = _read_to_end(reader).decode().splitlines()  # ends: the writer closed its end
    assert len(kept) < total
    assert len(kept) + (lost() - before) == total
    assert all(json.loads(line)["event"] == "check" for line in kept)  # whole lines only


_STDOUT_WRITER = """
import sys
from tenantgate.observe import metrics, sink
from tenantgate.observe.audit import AuditLog
sink.FLUSH_AT_EXIT_SECONDS = 600  # the parent reads standard output only once told below
audit = AuditLog("-", sample_allow=1.0, max_lines_per_second=0)
for i in range(%d):
    audit.write_event({"event": "check", "n": i, "pad": "x" * 200})
audit.close()  # the shared standard output sink stays open; the exit writes what is queued
print(int(metrics.AUDIT_WRITE_ERRORS._value.get()), file=sys.stderr, flush=True)
"""


def test_standard_output_nobody_reads_stops_nothing_and_the_exit_writes_the_queue() -> None:
    # audit.path "-" is the default and what the chart sets: stdout is then the container's
    # log pipe, which stops when the log driver or collector stalls.
    total = 1000  # ~230 KB: several times what the pipe holds
    with subprocess.Popen([sys.executable, "-c", _STDOUT_WRITER % total],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as child:
        assert child.stdout is not None and child.stderr is not None
        ready, _, _ = select.select([child.stderr], [], [], HANG_GUARD_SECONDS)
        if not ready:
            child.kill()
        assert ready, "the writes waited for a reader of standard output"
        counted_lost = int(child.stderr.readline())  # said before stdout was read at all
        lines = child.stdout.read().decode().splitlines()
    assert child.returncode == 0
    assert counted_lost == 0 and len(lines) == total  # the queue held them all


def test_a_fifo_without_a_reader_is_refused_at_once_when_not_waiting(tmp_path: Path) -> None:
    fifo = tmp_path / "audit.fifo"
    os.mkfifo(fifo)
    # Before: the open blocked until a reader came, here for ever (a reload: the event loop).
    with pytest.raises(OSError, match=r"a FIFO with no reader") as caught:
        sink.open_sink(str(fifo), wait_for_reader=False)
    assert caught.value.errno == errno.ENXIO


def test_a_fifo_without_a_reader_is_waited_for_at_start_up(tmp_path: Path) -> None:
    fifo = tmp_path / "audit.fifo"
    os.mkfifo(fifo)
    opened: list[AuditLog] = []
    opener = threading.Thread(target=lambda: opened.append(AuditLog(str(fifo), 1.0)))
    opener.start()
    opener.join(0.3)
    assert opener.is_alive() and not opened  # docs/configuration.md: serve waits for it
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        opener.join(HANG_GUARD_SECONDS)
        closed(opened[0])
    finally:
        os.close(reader)


def test_a_socket_file_is_still_no_such_device(tmp_path: Path) -> None:
    path = tmp_path / "audit.sock"
    with socket.socket(socket.AF_UNIX) as listening:
        listening.bind(str(path))
        with pytest.raises(OSError, match=r"No such device or address"):
            sink.open_sink(str(path), wait_for_reader=False)


def test_a_busy_tenants_sampled_allows_are_not_cut_to_a_share(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Allows shared the verified class and its per-tenant share: one tenant at 30k requests a
    # second and sample_allow 0.01 lost lines every second, and the alert fired on it.
    monkeypatch.setattr(audit_module.time, "time", lambda: 1_800_000_000.2)
    log_file = tmp_path / "audit.log"
    audit = AuditLog(str(log_file), sample_allow=1.0, max_lines_per_second=8)  # share: 2
    before = dropped("sampled_allow"), dropped("identified")
    allow = replace(RECORD, decision="allow", reason="ok", status=200)
    for _ in range(8):
        audit.write(allow)
    audit.write(RECORD)  # a denial of the same tenant: a class of its own
    closed(audit)
    assert _written(log_file) == [("acme", "ok")] * 8 + [("acme", "scope_missing")]
    assert (dropped("sampled_allow"), dropped("identified")) == before


def test_an_issuer_claiming_a_tenant_it_may_not_speak_for_does_not_use_its_share(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Shares were by the tenant claimed: another tenant's IdP signing tokens that claim acme
    # (issuer_not_allowed_for_tenant) used up acme's share, and acme's own lines were dropped.
    monkeypatch.setattr(audit_module.time, "time", lambda: 1_800_000_000.2)
    log_file = tmp_path / "audit.log"
    audit = AuditLog(str(log_file), sample_allow=1.0, max_lines_per_second=8)  # share: 2
    foreign = replace(RECORD, issuer="globex-idp", reason="issuer_not_allowed_for_tenant")
    for _ in range(10):
        audit.write(foreign)  # the tenant stage refused it: verified for no tenant
    audit.write(RECORD, tenant="acme")
    closed(audit)
    assert _written(log_file) == [("acme", "issuer_not_allowed_for_tenant")] * 2 + [
        ("acme", "scope_missing")]


def test_an_issuer_claiming_a_new_tenant_each_time_gets_one_share(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Shares were by the tenant claimed: an IdP signing tokens for t1, t2, t3, t4 (each refused
    # by the tenant stage) got four quarters, the whole class, and acme's lines were dropped.
    monkeypatch.setattr(audit_module.time, "time", lambda: 1_800_000_000.2)
    log_file = tmp_path / "audit.log"
    audit = AuditLog(str(log_file), sample_allow=1.0, max_lines_per_second=8)  # share: 2
    for n in range(8):
        audit.write(replace(RECORD, issuer="globex-idp", tenant=f"t{n % 4}",
                            reason="tenant_unknown"))
    audit.write(RECORD, tenant="acme")
    closed(audit)
    assert _written(log_file) == [("t0", "tenant_unknown"), ("t1", "tenant_unknown"),
                                  ("acme", "scope_missing")]


@pytest.mark.parametrize("rotate", ["moved", "moved-and-deleted", "moved-and-recreated"])
def test_a_rotated_audit_file_is_followed_within_a_second(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rotate: str) -> None:
    # logrotate's default moves the file away (then compresses and deletes it): lines went on
    # into the moved or deleted file, counted as written, until a reload.
    clock = [5000.0]
    monkeypatch.setattr(sink.time, "monotonic", lambda: clock[0])
    log_file = tmp_path / "audit.log"
    audit = AuditLog(str(log_file), sample_allow=1.0)
    audit.write(replace(RECORD, request_id="before"))
    log_file.rename(tmp_path / "audit.log.1")
    if rotate == "moved-and-deleted":
        (tmp_path / "audit.log.1").unlink()
    if rotate == "moved-and-recreated":
        log_file.touch()
    audit.write(replace(RECORD, request_id="same-second"))  # not checked yet: old file
    clock[0] += 1.0
    audit.write(replace(RECORD, request_id="after"))
    closed(audit)
    assert [json.loads(text)["request_id"] for text in log_file.read_text().splitlines()] == [
        "after"]
    if rotate != "moved-and-deleted":
        rotated = (tmp_path / "audit.log.1").read_text().splitlines()
        assert [json.loads(text)["request_id"] for text in rotated] == ["before", "same-second"]


def test_a_file_sink_keeps_its_file_when_the_path_is_unchanged(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [5000.0]
    monkeypatch.setattr(sink.time, "monotonic", lambda: clock[0])
    log_file = tmp_path / "audit.log"
    audit = AuditLog(str(log_file), sample_allow=1.0)
    for n in range(3):
        audit.write(replace(RECORD, request_id=f"r{n}"))
        clock[0] += 1.5
    closed(audit)
    assert [json.loads(text)["request_id"] for text in log_file.read_text().splitlines()] == [
        "r0", "r1", "r2"]


@pytest.mark.parametrize("rotated_kept", [True, False], ids=["rotated-kept", "rotated-deleted"])
def test_a_rotation_that_cannot_be_followed_is_said_once_and_lost_lines_are_counted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        rotated_kept: bool) -> None:
    # Its directory gone (or, for a non-root user, a new file it may not open): a warning with
    # a traceback every second, and lines written into a deleted file counted as written.
    clock = [5000.0]
    monkeypatch.setattr(sink.time, "monotonic", lambda: clock[0])
    directory = tmp_path / "logs"
    directory.mkdir()
    log_file = directory / "audit.log"
    audit = AuditLog(str(log_file), sample_allow=1.0)
    audit.write(replace(RECORD, request_id="before"))
    rotated = tmp_path / "audit.log.1"
    log_file.rename(rotated)
    directory.rmdir()
    if not rotated_kept:
        rotated.unlink()
    before = lost()
    with caplog.at_level(logging.INFO, logger="tenantgate.audit"):
        for n in range(5):
            clock[0] += 1.0
            audit.write(replace(RECORD, request_id=f"after-{n}"))
    closed(audit)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING
                and "cannot be opened again" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].exc_info is None
    if rotated_kept:
        assert len(rotated.read_text().splitlines()) == 6
        assert lost() == before
    else:
        assert lost() == before + 5
