"""Dependencies failing behind a real Envoy: the JWKS endpoint down -> known keys keep working;
tenantgate down -> Envoy denies (503) and never passes a request through."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from e2e_support import KEY_ID, EchoBackend, Stack, base_config, received, running_stack
from tenantgate.testing import tokens
from tenantgate.testing.jwks_server import JwksServer


@pytest.fixture(scope="module")
def jwks() -> Iterator[JwksServer]:
    with JwksServer(max_age=1) as server:  # max-age 1 s: a cached key is soon "stale"
        yield server


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, envoy_path: str,
          jwks: JwksServer) -> Iterator[Stack]:
    backend = EchoBackend().start()
    directory = tmp_path_factory.mktemp("failures")
    config = base_config(directory, jwks={"url": jwks.jwks_url, "allow_insecure_http": True,
                                          "min_ttl": 1, "default_ttl": 1})
    key = tokens.generate_key("ES256")
    jwks.keys = [tokens.public_jwk(key, KEY_ID, "ES256")]
    try:
        with running_stack(directory, upstream=backend.address, config=config, key=key) as s:
            yield s
    finally:
        backend.stop()


def test_known_keys_keep_working_while_the_jwks_endpoint_is_down(
        stack: Stack, jwks: JwksServer) -> None:
    with stack.client() as client:
        first = client.get("/tenants/acme/x", headers=stack.auth("acme"))
        assert received(first)["path"] == "/tenants/acme/x"
        jwks.failing = True  # every fetch now answers 503
        try:
            time.sleep(1.5)  # past the key set's TTL: the next use wants a refresh
            later = [client.get("/tenants/acme/x", headers=stack.auth("acme")) for _ in range(3)]
        finally:
            jwks.failing = False
    assert [received(r)["path"] for r in later] == ["/tenants/acme/x"] * 3


def test_unknown_key_is_refused_while_the_jwks_endpoint_is_down(
        stack: Stack, jwks: JwksServer) -> None:
    stranger = tokens.generate_key("ES256")
    token = tokens.mint(stranger, "ES256", tokens.claims(
        "https://issuer.e2e.test/", "notes", "acme"), kid="not-" + KEY_ID)
    jwks.failing = True
    try:
        with stack.client() as client:
            reply = client.get("/tenants/acme/x", headers={"authorization": f"Bearer {token}"})
    finally:
        jwks.failing = False
    assert reply.status_code in (401, 503)
    assert "x-echo-backend" not in reply.headers


def test_tenantgate_stopped_means_envoy_denies(stack: Stack) -> None:
    stack.tenantgate.stop()
    with stack.client() as client:
        replies = [client.get("/tenants/acme/x", headers=stack.auth("acme")) for _ in range(3)]
        anonymous = client.get("/tenants/acme/x")
    assert {r.status_code for r in [*replies, anonymous]} == {503}
    assert all("x-echo-backend" not in r.headers for r in [*replies, anonymous])
