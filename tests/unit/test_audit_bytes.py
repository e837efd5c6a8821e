"""The audit log's bounds in bytes as written: a field cut to fit once escaped, a line of
known length, and so a class's bytes a second under max_lines_per_second lines of it."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from tenantgate.observe import audit as audit_module
from tenantgate.observe.audit import (
    DEFAULT_MAX_LINES_PER_SECOND,
    FIELD_BYTES,
    MAX_LINE_BYTES,
    AuditLog,
    AuditRecord,
)
from tenantgate.testing.check import DevIssuer, LocalCheck, build_config, check_request

EMOJI = "\U0001f600"  # written as "\ud83d\ude00": one character, 12 bytes
RECORD = AuditRecord(
    request_id="r-1",
    tenant="acme",
    subject="u",
    issuer="idp",
    key_id=None,
    method="GET",
    path="/notes",
    decision="deny",
    reason="scope_missing",
    status=403,
    latency_ms=0.1,
)
ANONYMOUS = replace(
    RECORD, tenant=None, subject=None, issuer=None, reason="no_credential", status=401
)
HANG_GUARD_SECONDS = 60.0  # only ends a test that would otherwise hang; nothing is timed


def _longest(text: str) -> AuditRecord:
    """Every free-text field past its bound, and the longest of everything else."""
    return AuditRecord(
        request_id=text * 300,
        tenant=text * 300,
        subject=text * 600,
        issuer=text * 100,
        key_id=text * 200,
        method=text * 100,
        path=text * 5000,
        decision="allow",
        reason="issuer_not_allowed_for_tenant",
        status=503,
        latency_ms=-1.2345678901234567e300,
    )


def _lines(audit: AuditLog, log_file: Path) -> list[bytes]:
    audit.close()
    assert audit.wait_closed(HANG_GUARD_SECONDS)
    return log_file.read_bytes().splitlines(keepends=True)


def _written_bytes(text: str) -> int:
    return len(json.dumps(text)) - 2


def test_an_emoji_path_and_request_id_are_cut_to_their_bytes_as_written_and_marked(
    tmp_path: Path,
) -> None:
    # Cut at 1024 characters, then escaped: a path of emoji was a 12 KiB line per denial
    # (14.6 MB/s at the cap of 1000 lines a second, sent straight to the gRPC port).
    log_file = tmp_path / "audit.log"
    audit = AuditLog(str(log_file), sample_allow=1.0)
    audit.write(replace(ANONYMOUS, path="/" + EMOJI * 5000, request_id=EMOJI * 128))
    [raw] = _lines(audit, log_file)
    line = json.loads(raw)
    assert len(raw) <= MAX_LINE_BYTES
    assert line["path_truncated"] is True and line["request_id_truncated"] is True
    assert line["path"] == "/" + EMOJI * 85  # 1 + 85 * 12 = 1021 bytes: one more is 1033
    assert line["request_id"] == EMOJI * 21  # 252 bytes of 256


async def test_a_denial_with_an_emoji_path_and_request_id_writes_a_bounded_line(
    tmp_path: Path,
) -> None:
    # Through the real Check servicer, as sent straight to the gRPC port: no credential.
    config = build_config(tmp_path, [DevIssuer(algorithm="ES256").config()])
    async with LocalCheck(config) as gate:
        response, audit = await gate.check(
            check_request("/" + EMOJI * 1023, headers={"x-request-id": EMOJI * 128})
        )
    assert response.denied_response.status.code == 401
    assert audit is not None and audit["reason"] == "no_credential"
    assert audit["path_truncated"] is True and audit["request_id_truncated"] is True
    assert len((tmp_path / "audit.log").read_bytes()) <= MAX_LINE_BYTES


@pytest.mark.parametrize(
    "text", [EMOJI, '"', "\x01", "a\u00e9\\"], ids=["emoji", "quote", "control", "mixed"]
)
def test_every_free_text_field_fits_its_bytes_and_the_line_its_bound(
    tmp_path: Path, text: str
) -> None:
    log_file = tmp_path / "audit.log"
    audit = AuditLog(str(log_file), sample_allow=1.0)
    original = _longest(text)
    audit.write(original, cross_tenant=True, tenant="acme")
    [raw] = _lines(audit, log_file)
    line = json.loads(raw)
    assert len(raw) <= MAX_LINE_BYTES
    for name, limit in FIELD_BYTES.items():
        value = line[name]
        assert line[f"{name}_truncated"] is True
        assert _written_bytes(value) <= limit < _written_bytes(value + text)  # the most
        assert getattr(original, name).startswith(value)


def test_values_within_their_bytes_are_written_whole_and_unmarked(tmp_path: Path) -> None:
    log_file = tmp_path / "audit.log"
    audit = AuditLog(str(log_file), sample_allow=1.0)
    whole = replace(
        RECORD,
        path="/" + EMOJI * 85,
        request_id='"' * 128,
        subject="\x01" * 85,
        method="UPDATEREDIRECTREF",
    )
    audit.write(whole)
    [raw] = _lines(audit, log_file)
    line = json.loads(raw)
    assert not [name for name in line if name.endswith("_truncated")]
    assert (line["path"], line["request_id"], line["subject"]) == (
        whole.path,
        whole.request_id,
        whole.subject,
    )


def test_a_revoked_keys_event_is_cut_to_the_same_bytes(tmp_path: Path) -> None:
    log_file = tmp_path / "audit.log"
    audit = AuditLog(str(log_file), sample_allow=1.0)
    fields: dict[str, object] = {
        "event": "apikey_revoked_used",
        "key_id": "0123456789abcdef",
        "tenant": "acme",
        "request_id": EMOJI * 128,
    }
    audit.write_capped(fields)
    [raw] = _lines(audit, log_file)
    line = json.loads(raw)
    assert line["request_id_truncated"] is True
    assert _written_bytes(line["request_id"]) <= FIELD_BYTES["request_id"]
    assert fields["request_id"] == EMOJI * 128  # the caller's dict is left as it was


def _flood(audit: AuditLog, line_class: str, lines: int) -> None:
    worst = _longest(EMOJI)
    for n in range(lines):
        tenant = f"t{n}"  # a new caller each time: the class's cap, not a share, is what stops
        if line_class == "anonymous":
            audit.write(replace(worst, subject=None, issuer=None, decision="deny"))
        elif line_class == "cross_tenant":
            audit.write(replace(worst, decision="deny"), cross_tenant=True, tenant=tenant)
        elif line_class == "identified":
            audit.write(replace(worst, decision="deny"), tenant=tenant)
        else:
            audit.write(worst, tenant=tenant)


@pytest.mark.parametrize("line_class", ["anonymous", "cross_tenant", "identified", "sampled_allow"])
def test_a_flood_of_the_longest_lines_stays_within_the_bytes_a_second_of_its_class(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, line_class: str
) -> None:
    # Bytes are counted, not timed: the clock stands still within one second.
    monkeypatch.setattr(audit_module.time, "time", lambda: 1_800_000_000.2)
    log_file = tmp_path / "audit.log"
    audit = AuditLog(str(log_file), sample_allow=1.0)
    _flood(audit, line_class, DEFAULT_MAX_LINES_PER_SECOND * 3 // 2)
    written = _lines(audit, log_file)
    assert len(written) == DEFAULT_MAX_LINES_PER_SECOND
    assert sum(map(len, written)) <= DEFAULT_MAX_LINES_PER_SECOND * MAX_LINE_BYTES


def test_the_documented_bounds_are_the_codes() -> None:
    docs = Path(__file__).parents[2] / "docs" / "configuration.md"
    text = " ".join(docs.read_text().split())
    for name, limit in FIELD_BYTES.items():
        assert f"`{name}` {limit}" in text
    assert f"is at most {MAX_LINE_BYTES} bytes" in text
    assert f"`max_lines_per_second` \u00d7 {MAX_LINE_BYTES} bytes a second" in text


def test_a_huge_field_is_never_escaped_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Escaping a megabyte path before cutting it cost about a millisecond of the event loop
    # per line, at up to max_lines_per_second lines of each class.
    escaped: list[int] = []
    real = audit_module.encode_basestring_ascii

    def counting(text: str) -> str:
        escaped.append(len(text))
        return real(text)

    monkeypatch.setattr(audit_module, "encode_basestring_ascii", counting)
    log_file = tmp_path / "audit.log"
    audit = AuditLog(str(log_file), sample_allow=1.0)
    audit.write(replace(ANONYMOUS, path="/" + "a" * 1_000_000))
    (line,) = _lines(audit, log_file)
    written = json.loads(line)
    assert written["path_truncated"] is True
    assert len(written["path"]) == FIELD_BYTES["path"]
    assert escaped and max(escaped) <= FIELD_BYTES["path"]
