"""pipeline.sanitize through the real Check servicer: what it refuses before any credential is
looked at, and what the refusal's audit line keeps."""

from __future__ import annotations

from pathlib import Path

import pytest
from tenantgate.observe import audit as audit_module
from tenantgate.pipeline import MAX_METHOD_CHARS
from tenantgate.testing.check import DevIssuer, LocalCheck, build_config, check_request

IDP = DevIssuer(algorithm="ES256")


@pytest.mark.parametrize("method", ["GET", "UPDATEREDIRECTREF", "X" * MAX_METHOD_CHARS],
                         ids=["get", "longest-registered", "at-the-bound"])
async def test_an_upper_case_method_up_to_the_bound_passes(tmp_path: Path, method: str) -> None:
    async with LocalCheck(build_config(tmp_path, [IDP.config()])) as gate:
        token = IDP.token(tenant="acme")
        response, audit = await gate.check(check_request(
            "/x", method, headers={"authorization": f"Bearer {token}"}))
    assert not response.HasField("denied_response")
    assert audit is not None and audit["method"] == method


@pytest.mark.parametrize("length", [MAX_METHOD_CHARS + 1, 60_000], ids=["one-over", "60k"])
async def test_a_method_longer_than_any_real_one_is_refused_and_cut_in_the_audit_line(
        tmp_path: Path, length: int) -> None:
    # Envoy passes any upper-case token as the method, up to its 60 KiB header budget: it was
    # accepted, handed to rules and backends, and written whole into the audit line.
    async with LocalCheck(build_config(tmp_path, [IDP.config()])) as gate:
        token = IDP.token(tenant="acme")
        response, audit = await gate.check(check_request(
            "/x", "A" * length, headers={"authorization": f"Bearer {token}"}))
    assert response.denied_response.status.code == 400
    assert audit is not None and audit["reason"] == "malformed_request"
    assert audit["method"] == "A" * audit_module.FIELD_BYTES["method"]
    assert audit["method_truncated"] is True
    assert len((tmp_path / "audit.log").read_bytes()) < 1000
