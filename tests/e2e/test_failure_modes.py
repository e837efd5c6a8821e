"""Dependencies failing behind a real Envoy: the JWKS endpoint failing (503) or stopped
(connection refused) -> tenantgate tries to refetch, fails, and known keys keep working;
tenantgate down -> Envoy denies (503) and never passes a request through."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from e2e_support import (
    KEY_ID,
    EchoBackend,
    Stack,
    base_config,
    received,
    running_stack,
    tenantgate_metric,
    with_metrics,
)
from tenantgate.testing import tokens
from tenantgate.testing.jwks_server import JwksServer


@pytest.fixture(scope="module")
def jwks() -> Iterator[JwksServer]:
    with JwksServer(max_age=1) as server:  # max-age 1 s: a cached key is soon "stale"
        yield server


JWKS_CONFIG = {"allow_insecure_http": True, "min_ttl": 1, "default_ttl": 1, "max_ttl": 1}
FETCH_ERRORS = ("tenantgate_jwks_fetches_total", {"issuer": "e2e", "result": "error"})
OUTAGE_DEADLINE = 20.0  # seconds to wait for tenantgate to try a refetch during the outage


@contextlib.contextmanager
def jwks_stack(directory: Path, jwks: JwksServer) -> Iterator[Stack]:
    """A stack whose issuer keys come from `jwks` with a 1 s TTL (a refetch is soon due), with
    tenantgate's metrics on so a test can see the fetches it attempts."""
    backend = EchoBackend().start()
    config = with_metrics(base_config(directory, jwks={"url": jwks.jwks_url, **JWKS_CONFIG}))
    key = tokens.generate_key("ES256")
    jwks.keys = [tokens.public_jwk(key, KEY_ID, "ES256")]
    try:
        with running_stack(directory, upstream=backend.address, config=config, key=key) as s:
            yield s
    finally:
        backend.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, envoy_path: str,
          jwks: JwksServer) -> Iterator[Stack]:
    with jwks_stack(tmp_path_factory.mktemp("failures"), jwks) as s:
        yield s


def fetch_errors(stack: Stack) -> float:
    name, labels = FETCH_ERRORS
    return tenantgate_metric(stack, name, **labels)


def serve_until_a_refetch_fails(stack: Stack, client: httpx.Client, errors_before: float
                                ) -> list[httpx.Response]:
    """Keep sending acme's requests (each must reach the backend) until tenantgate has counted
    a failed JWKS fetch after `errors_before`; the deadline bounds the wait, not a timing."""
    replies = []
    deadline = time.monotonic() + OUTAGE_DEADLINE
    while fetch_errors(stack) <= errors_before:
        assert time.monotonic() < deadline, "tenantgate never tried to refetch the JWKS"
        replies.append(client.get("/tenants/acme/x", headers=stack.auth("acme")))
        assert received(replies[-1])["path"] == "/tenants/acme/x"
        time.sleep(0.1)
    return replies


def test_known_keys_keep_working_while_the_jwks_endpoint_fails(
        stack: Stack, jwks: JwksServer) -> None:
    with stack.client() as client:
        first = client.get("/tenants/acme/x", headers=stack.auth("acme"))
        assert received(first)["path"] == "/tenants/acme/x"
        errors_before, fetches_before = fetch_errors(stack), jwks.fetches
        jwks.failing = True  # every fetch now answers 503
        try:
            during = serve_until_a_refetch_fails(stack, client, errors_before)
            # Past a failed refetch (not just a TTL nobody acted on): still served.
            later = [client.get("/tenants/acme/x", headers=stack.auth("acme")) for _ in range(3)]
        finally:
            jwks.failing = False
    assert jwks.fetches > fetches_before  # the refetch reached the (failing) endpoint
    assert during and [received(r)["path"] for r in later] == ["/tenants/acme/x"] * 3


def test_known_keys_keep_working_while_the_jwks_endpoint_is_stopped(
        tmp_path: Path, envoy_path: str) -> None:
    with JwksServer(max_age=1) as own, jwks_stack(tmp_path, own) as stack, \
            stack.client() as client:
        first = client.get("/tenants/acme/x", headers=stack.auth("acme"))
        assert received(first)["path"] == "/tenants/acme/x"
        errors_before = fetch_errors(stack)
        own.stop()  # the listener is closed: connection refused, not an HTTP error
        during = serve_until_a_refetch_fails(stack, client, errors_before)
        later = [client.get("/tenants/acme/x", headers=stack.auth("acme")) for _ in range(3)]
    assert during and [received(r)["path"] for r in later] == ["/tenants/acme/x"] * 3


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


def test_tenantgate_stopped_means_envoy_denies(tmp_path: Path, envoy_path: str) -> None:
    # Its own stack: stopping the module's tenantgate would leave it dead for any test after.
    with JwksServer(max_age=1) as own, jwks_stack(tmp_path, own) as stack:
        with stack.client() as client:  # served while tenantgate is up
            reply = client.get("/tenants/acme/x", headers=stack.auth("acme"))
            assert received(reply)["path"] == "/tenants/acme/x"
        stack.tenantgate.stop()
        with stack.client() as client:
            replies = [client.get("/tenants/acme/x", headers=stack.auth("acme"))
                       for _ in range(3)]
            anonymous = client.get("/tenants/acme/x")
    assert {r.status_code for r in [*replies, anonymous]} == {503}
    assert all("x-echo-backend" not in r.headers for r in [*replies, anonymous])
