"""The identity stage over the real servicer and a served JWKS: a bad signature under a known kid
is remembered when its refetch ran, and verified again on each retry when the rate limit
refused that refetch (the issuer may have put a new key behind the kid)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tenantgate.decision import Reason
from tenantgate.testing.check import (
    DevIssuer,
    LocalCheck,
    build_config,
    check_request,
    record_verifications,
)
from tenantgate.testing.jwks_server import JwksServer


@pytest.fixture
def idp() -> DevIssuer:
    return DevIssuer(issuer="https://idp.test", name="idp", kid="k1")


@pytest.fixture
def jwks(idp: DevIssuer) -> Iterator[JwksServer]:
    with JwksServer(idp.jwks()) as server:
        yield server


async def reasons(gate: LocalCheck, token: str) -> list[str]:
    found = []
    for _ in range(2):
        _, audit = await gate.check(check_request(headers={"authorization": f"Bearer {token}"}))
        assert audit is not None
        found.append(str(audit["reason"]))
    return found


async def test_a_bad_signature_whose_refetch_was_refused_is_verified_again(
        tmp_path: Path, idp: DevIssuer, jwks: JwksServer) -> None:
    served = {"url": jwks.jwks_url, "allow_insecure_http": True, "refetch_interval": "1h"}
    forger = DevIssuer(issuer=idp.issuer, name=idp.name, kid=idp.kid)
    async with LocalCheck(build_config(tmp_path, [idp.config(jwks=served)])) as gate:
        verified = record_verifications(gate.runtime)
        first, second = forger.token(subject="first"), forger.token(subject="second")
        assert await reasons(gate, first) == [Reason.BAD_SIGNATURE] * 2
        assert verified == [first] and jwks.fetches == 2  # its refetch ran: remembered
        assert await reasons(gate, second) == [Reason.BAD_SIGNATURE] * 2
        assert verified == [first, second, second]  # its refetch was refused: not remembered
        assert jwks.fetches == 2
