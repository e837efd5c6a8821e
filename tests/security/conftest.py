"""Fixtures of the adversarial matrix: issuers with real keys, a JWKS over real HTTP, and the
real Check servicer over a Runtime built from a real config."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from tenantgate.testing.check import DevIssuer, LocalCheck, build_config
from tenantgate.testing.jwks_server import JwksServer


@pytest.fixture(scope="session")
def idp() -> DevIssuer:
    """The shared IdP: may speak for any tenant that matches the tenant pattern."""
    return DevIssuer(issuer="https://idp.test", name="idp")


@pytest.fixture(scope="session")
def acme_idp() -> DevIssuer:
    """Tenant acme's own IdP: may speak for acme only."""
    return DevIssuer(issuer="https://login.acme.test", name="acme-idp", kid="acme-1")


@pytest.fixture(scope="session")
def typed_idp(idp: DevIssuer) -> DevIssuer:
    """An issuer that requires `typ: at+jwt` (RFC 9068 access tokens); same keys as idp."""
    return DevIssuer(issuer="https://typed.test", name="typed", keys=idp.keys)


@pytest.fixture
def jwks_server(idp: DevIssuer) -> Iterator[JwksServer]:
    with JwksServer(idp.jwks()) as server:
        yield server


@pytest.fixture
async def gate(tmp_path: Path, idp: DevIssuer, acme_idp: DevIssuer, typed_idp: DevIssuer,
               jwks_server: JwksServer) -> AsyncIterator[LocalCheck]:
    served = {"url": jwks_server.jwks_url, "allow_insecure_http": True,
              "refetch_interval": "30s"}
    config = build_config(tmp_path, [
        idp.config(jwks=served),
        acme_idp.config(tenants=["acme"], tenant_pattern=None),
        typed_idp.config(typ="at+jwt"),
    ], credentials={"max_token_bytes": 4096})
    async with LocalCheck(config) as local:
        yield local
