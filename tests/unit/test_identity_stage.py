"""The identity stage over the real servicer: a token refused for good is verified once and then
refused again with the same reason from the rejected-token cache; one that time may fix is not."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tenantgate.decision import Reason
from tenantgate.identity import stage as stage_module
from tenantgate.observe import metrics
from tenantgate.testing.check import (
    DevIssuer,
    LocalCheck,
    build_config,
    check_request,
    record_verifications,
)


@pytest.fixture(scope="module")
def idp() -> DevIssuer:
    return DevIssuer(issuer="https://idp.test", name="idp", kid="k1")


@pytest.fixture(scope="module")
def forger(idp: DevIssuer) -> DevIssuer:
    """Another key under the same kid and issuer: its tokens name a known key, yet fail it."""
    return DevIssuer(issuer=idp.issuer, name=idp.name, kid=idp.kid)


@pytest.fixture
async def gate(tmp_path: Path, idp: DevIssuer) -> AsyncIterator[tuple[LocalCheck, list[str]]]:
    """The servicer over a Runtime whose JWT verifier records every token it verifies."""
    async with LocalCheck(build_config(tmp_path, [idp.config()])) as local:
        yield local, record_verifications(local.runtime)


async def reasons(gate: LocalCheck, token: str, times: int = 2) -> list[str]:
    found = []
    for _ in range(times):
        _, audit = await gate.check(check_request(headers={"authorization": f"Bearer {token}"}))
        assert audit is not None
        found.append(str(audit["reason"]))
    return found


@pytest.mark.parametrize("reason", [Reason.TOKEN_EXPIRED, Reason.BAD_SIGNATURE], ids=str)
async def test_a_token_refused_for_good_is_verified_once_and_refused_alike_again(
        gate: tuple[LocalCheck, list[str]], idp: DevIssuer, forger: DevIssuer,
        reason: Reason) -> None:
    local, verified = gate
    token = (idp.token(exp=int(time.time()) - 3600) if reason is Reason.TOKEN_EXPIRED
             else forger.token())
    hits = metrics.TOKEN_CACHE.value(("rejected_hit",))
    assert await reasons(local, token) == [reason, reason]  # the audit line's real reason
    assert verified == [token]
    assert metrics.TOKEN_CACHE.value(("rejected_hit",)) == hits + 1


class SteppedClock:
    """A wall clock that may be stepped back (the time module as the stage reads it), and a
    monotonic one that only moves forward (the rejected-token cache's)."""

    def __init__(self) -> None:
        self.wall = time.time()
        self.elapsed = 1000.0

    def time(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.elapsed


async def test_a_wall_clock_stepped_back_does_not_keep_a_refusal_past_its_ttl(
        gate: tuple[LocalCheck, list[str]], idp: DevIssuer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The rejected-token TTL was measured on the wall clock: stepped back an hour, a refusal
    stayed cached for an hour past its 60 s."""
    local, verified = gate
    clock = SteppedClock()
    monkeypatch.setattr(stage_module, "time", clock)  # verification's wall time
    monkeypatch.setattr(local.runtime.rejected_tokens, "_clock", clock.monotonic)
    token = idp.token(exp=int(time.time()) - 86400)
    assert await reasons(local, token) == [Reason.TOKEN_EXPIRED] * 2
    assert verified == [token]
    clock.wall -= 3600
    clock.elapsed += 60  # rejected_token_cache_ttl
    assert await reasons(local, token) == [Reason.TOKEN_EXPIRED] * 2
    assert verified == [token, token]


async def test_a_token_not_yet_valid_is_verified_every_time(
        gate: tuple[LocalCheck, list[str]], idp: DevIssuer) -> None:
    local, verified = gate
    token = idp.token(nbf=int(time.time()) + 3600)
    assert await reasons(local, token) == [Reason.TOKEN_NOT_YET_VALID] * 2
    assert verified == [token, token]
