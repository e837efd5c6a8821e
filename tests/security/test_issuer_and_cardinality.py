"""HS256 only with an explicitly configured secret and never across issuers; metric labels
stay bounded whatever tenants callers claim."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import jwt
import pytest
from prometheus_client import REGISTRY
from tenantgate.testing.check import DevIssuer, LocalCheck, build_config, check_request

SECRET = "s" * 64
HS_ISSUER = "https://hs.test"
RSA = DevIssuer(issuer="https://rsa.test", name="rsa")


@pytest.fixture
async def gate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LocalCheck]:
    monkeypatch.setenv("TG_TEST_HS_SECRET", SECRET)
    config = build_config(tmp_path, [
        {"name": "hs", "issuer": HS_ISSUER, "audiences": ["api"], "algorithms": ["HS256"],
         "hs_secret": {"fromEnv": "TG_TEST_HS_SECRET"}, "tenants": ["acme"]},
        RSA.config()],
        tenants={"registry": {"acme": {}, "globex": {}}, "allow_unknown": True})
    async with LocalCheck(config) as local:
        yield local


async def reason(gate: LocalCheck, token: str) -> str:
    _, audit = await gate.check(check_request(headers={"authorization": f"Bearer {token}"}))
    assert audit is not None
    return str(audit["reason"])


def hs_claims(**extra: object) -> dict[str, object]:
    return RSA.claims(tenant="acme", iss=HS_ISSUER, **extra)


async def test_hs256_with_the_configured_secret_is_accepted(gate: LocalCheck) -> None:
    assert await reason(gate, jwt.encode(hs_claims(), SECRET, algorithm="HS256")) == "ok"


@pytest.mark.parametrize("algorithm", ["HS384", "HS512"])
async def test_hs_variant_not_in_the_allow_list_is_refused(gate: LocalCheck,
                                                           algorithm: str) -> None:
    token = jwt.encode(hs_claims(), SECRET, algorithm=algorithm)
    assert await reason(gate, token) == "algorithm_not_allowed"


async def test_hs_issuer_refuses_an_rs256_token(gate: LocalCheck) -> None:
    token = jwt.encode(hs_claims(), RSA.keys[RSA.kid], algorithm="RS256",
                       headers={"kid": RSA.kid})
    assert await reason(gate, token) == "algorithm_not_allowed"


async def test_hs_token_with_the_wrong_secret_is_a_bad_signature(gate: LocalCheck) -> None:
    token = jwt.encode(hs_claims(), "t" * 64, algorithm="HS256")
    assert await reason(gate, token) == "bad_signature"


async def test_rsa_issuer_refuses_hs256_even_with_the_hs_issuers_secret(
        gate: LocalCheck) -> None:
    token = jwt.encode(RSA.claims(tenant="acme"), SECRET, algorithm="HS256")
    assert await reason(gate, token) == "algorithm_not_allowed"


def tenant_labels() -> set[str]:
    return {sample.labels["tenant"] for metric in REGISTRY.collect()
            if metric.name == "tenantgate_checks" for sample in metric.samples
            if "tenant" in sample.labels}


async def test_random_tenants_share_one_metric_label(gate: LocalCheck) -> None:
    for n in range(300):
        assert await reason(gate, RSA.token(tenant=f"random-{n}")) == "ok"
    await reason(gate, RSA.token(tenant="globex"))
    labels = tenant_labels()
    assert "other" in labels and "globex" in labels
    assert not any(label.startswith("random-") for label in labels)
