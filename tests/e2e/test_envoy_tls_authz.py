"""Front mode over TLS: a real Envoy whose bootstrap comes from `tenantgate envoy-config
--authz-tls-ca/--authz-tls-cert/--authz-tls-key` calls tenantgate's mutual-TLS listen.grpc and
passes a valid token; an Envoy without those flags gets no Check answered and denies."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from e2e_support import AUDIENCE, ISSUER, KEY_ID, EchoBackend, base_config, received, require
from tenantgate.cli import main
from tenantgate.testing import tokens
from tenantgate.testing.binaries import BinaryMissing, free_port
from tenantgate.testing.envoy import EnvoyProcess, TenantgateProcess
from tenantgate.testing.pki import write_pki
from tenantgate.testing.ports import on_fresh_ports


@dataclass
class Gate:
    """tenantgate serving Check over mutual TLS, and what Envoy needs to call it."""

    dir: Path
    grpc: str
    key: Any

    def auth(self, tenant: str) -> dict[str, str]:
        body = tokens.claims(ISSUER, AUDIENCE, tenant, subject="user-1")
        return {"authorization": f"Bearer {tokens.mint(self.key, 'ES256', body, kid=KEY_ID)}"}


@pytest.fixture
def gate(tmp_path: Path, envoy_path: str) -> Iterator[Gate]:
    write_pki(tmp_path)
    key = tokens.generate_key("ES256")
    (tmp_path / "jwks.json").write_text(
        json.dumps({"keys": [tokens.public_jwk(key, KEY_ID, "ES256")]}))
    config = base_config(tmp_path)
    config_path = tmp_path / "tenantgate.yaml"

    def attempt() -> TenantgateProcess:
        config["listen"] = {"grpc": f"127.0.0.1:{free_port()}", "metrics": None,
                            "tls": {"cert": "server.crt", "key": "server.key",
                                    "client_ca": "ca.crt"}}
        config_path.write_text(yaml.safe_dump(config))
        return TenantgateProcess(config_path, grpc=config["listen"]["grpc"]).start()

    process = on_fresh_ports(attempt)
    try:
        yield Gate(tmp_path, config["listen"]["grpc"], key)
    finally:
        process.close()


@contextlib.contextmanager
def envoy_in_front(gate: Gate, backend: EchoBackend, *flags: str) -> Iterator[httpx.Client]:
    """An Envoy rendered by `tenantgate envoy-config --mode front` with `flags`."""
    output = gate.dir / "envoy.yaml"

    def attempt() -> tuple[EnvoyProcess, str]:
        listen = f"127.0.0.1:{free_port()}"
        assert main(["envoy-config", str(gate.dir / "tenantgate.yaml"), "--mode", "front",
                     "--authz", gate.grpc, "--listen", listen, "--upstream", backend.address,
                     "--admin", f"127.0.0.1:{free_port()}", "--output", str(output),
                     *flags]) == 0
        return EnvoyProcess(output.read_text()).start(), listen

    try:
        envoy, listen = on_fresh_ports(attempt)
    except BinaryMissing as exc:
        require(None, str(exc))
        raise
    try:
        with httpx.Client(base_url=f"http://{listen}", timeout=10) as client:
            yield client
    finally:
        envoy.close()


def test_envoy_with_the_authz_tls_flags_passes_a_valid_token(
        gate: Gate, backend: EchoBackend) -> None:
    flags = [f"--authz-tls-{name}={gate.dir / file}" for name, file in
             (("ca", "ca.crt"), ("cert", "client.crt"), ("key", "client.key"))]
    with envoy_in_front(gate, backend, *flags) as client:
        echo = received(client.get("/tenants/acme/notes", headers=gate.auth("acme")))
        assert ["x-tenant-id", "acme"] in echo["headers"]
        refused = client.get("/tenants/acme/notes")  # tenantgate answers: no credential
        assert refused.status_code == 401
        assert "x-echo-backend" not in refused.headers


@pytest.mark.parametrize("flags", [
    [],  # plaintext towards a TLS listener: no Check is ever answered
    ["--authz-tls-ca={dir}/ca.crt"],  # TLS, but no client certificate for its mTLS
], ids=["plaintext", "tls-without-client-certificate"])
def test_envoy_that_cannot_reach_the_tls_listener_denies_and_never_passes_through(
        gate: Gate, backend: EchoBackend, flags: list[str]) -> None:
    with envoy_in_front(gate, backend, *(f.format(dir=gate.dir) for f in flags)) as client:
        response = client.get("/tenants/acme/notes", headers=gate.auth("acme"))
    assert response.status_code == 503  # ext_authz failed: Envoy's status_on_error
    assert "x-echo-backend" not in response.headers
