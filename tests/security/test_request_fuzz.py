"""Whatever Envoy forwards (odd methods, paths, header bytes), a Check ends in a decision:
never an exception, which would surface as gRPC INTERNAL and leave the outcome to Envoy's
failure mode."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tenantgate.testing.check import DevIssuer, LocalCheck, build_config, check_request

IDP = DevIssuer(algorithm="ES256")
PIECES = ["", "/", "//", "..", "%2f", "%00", "\\", "?", "#", ";", ",", " ", "\r\n", "é", "\x00",
          "a" * 300, "{tenant}", "acme", "tenants", "*", "**", "Bearer", "Bearer x.y.z",
          ":", "%3A", "%3a", "[", "%5B", "%61", "%C3%A9", "%"]
NAMES = ["authorization", "Authorization", "x-api-key", "content-length", "content-type",
         "host", ":authority", "x-request-id", "x-tenant-id", "x-tenant-context", "cookie"]


@pytest.fixture
async def gate(tmp_path: Path) -> AsyncIterator[LocalCheck]:
    config = build_config(tmp_path, [IDP.config()], policy={"routes": [
        {"path": "/tenants/{tenant}/x:run", "action": "deny"},  # escapes of ":" are refused
        {"path": "/tenants/{tenant}/**"},
        {"path_prefix": "/notes", "max_body_bytes": 10, "content_types": ["application/json"]},
    ]})
    async with LocalCheck(config) as local:
        yield local


def junk(rng: random.Random) -> str:
    return "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 4)))


async def test_random_requests_always_end_in_a_decision(gate: LocalCheck) -> None:
    rng = random.Random(11)
    token = IDP.token()
    decided = set()
    for _ in range(1500):
        raw = [(rng.choice(NAMES), junk(rng)) for _ in range(rng.randint(0, 4))]
        if rng.random() < 0.5:
            raw.append(("authorization", f"Bearer {token}"))
        base = rng.choice(["/tenants/acme/x", "/tenants/acme/x:run", "/notes", ""])
        request = check_request(base + junk(rng),
                                rng.choice(["GET", "post", "", "\x00", "CONNECT"]),
                                raw_headers=raw, request_id=junk(rng)[:40], size=-1)
        if rng.random() < 0.3:
            request.attributes.request.http.header_map.headers.add(
                key="authorization", raw_value=bytes(rng.randrange(256) for _ in range(20)))
        response, audit = await gate.check(request)
        assert audit is not None  # every decision, allow or deny, was recorded
        decided.add(response.denied_response.status.code or 200)
    # The fuzz reached each (403: the x:run deny rule, written as itself).
    assert 200 in decided and 400 in decided and 401 in decided and 403 in decided
