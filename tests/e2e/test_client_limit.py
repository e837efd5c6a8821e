"""`envoy-config --client-limit` through a real Envoy (front mode): a client address past its
rate gets 429 from Envoy and never reaches tenantgate, whatever token it sends; another
address keeps its own allowance."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from e2e_support import (
    AUDIENCE,
    ISSUER,
    KEY_ID,
    EchoBackend,
    Stack,
    audit_lines,
    received,
    running_stack,
)
from tenantgate.config.quota import parse_rate
from tenantgate.testing import tokens

LIMIT = 3  # requests per hour per address: no refill can come while the test runs


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, envoy_path: str,
          backend: EchoBackend) -> Iterator[Stack]:
    directory = tmp_path_factory.mktemp("client-limit")
    with running_stack(directory, upstream=backend.address, mode="front",
                       client_limit=parse_rate(f"{LIMIT}/h")) as stack:
        yield stack


def get(stack: Stack, source: str, headers: dict[str, str]) -> httpx.Response:
    """A request from `source` (any 127.x address is this host's loopback)."""
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(base_url=stack.base_url, transport=transport, timeout=10) as client:
        return client.get("/tenants/acme/items", headers=headers)


def forged() -> dict[str, str]:
    """A token under the issuer's key id, signed with another key: only its signature fails."""
    body = tokens.claims(ISSUER, AUDIENCE, "acme")
    token = tokens.mint(tokens.generate_key("ES256"), "ES256", body, kid=KEY_ID)
    return {"authorization": f"Bearer {token}"}


def test_an_address_past_its_rate_is_refused_by_envoy_before_any_check(stack: Stack) -> None:
    first = [get(stack, "127.0.0.1", forged()) for _ in range(LIMIT)]
    assert [r.status_code for r in first] == [401] * LIMIT  # each one verified, and refused
    reasons = [line["reason"] for line in audit_lines(stack)]
    assert reasons == ["bad_signature"] * LIMIT

    later = [get(stack, "127.0.0.1", headers) for headers in (forged(), stack.auth("acme"))]
    assert [r.status_code for r in later] == [429, 429]  # a good token too: the address is spent
    assert all("x-echo-backend" not in r.headers for r in later)
    assert {r.headers["retry-after"] for r in later} == {"3600"}  # at most one refill away
    assert len(audit_lines(stack)) == LIMIT  # tenantgate never saw them

    other = get(stack, "127.0.0.2", stack.auth("acme"))  # another client, its own bucket
    assert received(other)["headers"]
