"""Through a real Envoy: a rule that spells out a reserved character (`jobs:cancel`) cannot be
dodged by escaping it (`jobs%3Acancel`). Envoy decodes only unreserved escapes, so Check sees
the escape that a decoding backend would read as the rule's own path; Check refuses it."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from e2e_support import EchoBackend, Stack, base_config, received, running_stack

PROTOCOLS = [pytest.param(False, id="http1"), pytest.param(True, id="http2")]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, envoy_path: str,
          backend: EchoBackend) -> Iterator[Stack]:
    directory = tmp_path_factory.mktemp("escaped-paths")
    config = base_config(directory)
    config["policy"]["routes"] = [{"path": "/tenants/{tenant}/jobs:cancel", "action": "deny"},
                                  {"path": "/tenants/{tenant}/drafts/[1]", "action": "deny"},
                                  {"path": "/tenants/{tenant}/**"}]
    with running_stack(directory, upstream=backend.address, config=config) as stack:
        yield stack


def send(stack: Stack, raw_path: str, http2: bool) -> httpx.Response:
    with stack.client(http2) as client:
        request = client.build_request("GET", "/", headers=stack.auth("acme"),
                                       extensions={"target": raw_path.encode()})
        return client.send(request)


@pytest.mark.parametrize("http2", PROTOCOLS)
@pytest.mark.parametrize("raw_path", ["/tenants/acme/jobs%3Acancel",
                                      "/tenants/acme/jobs%3acancel",
                                      "/tenants/acme/drafts/%5B1%5D"],
                         ids=["colon", "colon-lower", "brackets"])
def test_an_escaped_character_that_a_rule_spells_out_is_refused(
        stack: Stack, raw_path: str, http2: bool) -> None:
    response = send(stack, raw_path, http2)
    assert response.status_code == 400
    assert "x-echo-backend" not in response.headers


@pytest.mark.parametrize("http2", PROTOCOLS)
@pytest.mark.parametrize("raw_path", ["/tenants/acme/jobs:cancel", "/tenants/acme/drafts/[1]"],
                         ids=["colon", "brackets"])
def test_the_rule_applies_to_the_character_as_itself(stack: Stack, raw_path: str,
                                                     http2: bool) -> None:
    response = send(stack, raw_path, http2)
    assert response.status_code == 403
    assert "x-echo-backend" not in response.headers


@pytest.mark.parametrize("http2", PROTOCOLS)
def test_escapes_no_rule_cares_about_reach_the_backend_as_sent(stack: Stack,
                                                                http2: bool) -> None:
    # Envoy decodes the unreserved `%61` itself and keeps `%40`: no rule spells out `@`.
    echo = received(send(stack, "/tenants/acme/%61b%40c", http2))
    assert echo["path"] == "/tenants/acme/ab%40c"
