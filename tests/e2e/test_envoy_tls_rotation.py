"""Envoy's TLS files towards tenantgate are renewed without restarting Envoy: a real Envoy
rendered by `tenantgate envoy-config --authz-tls-ca/--authz-tls-cert/--authz-tls-key` and a real
mutual-TLS tenantgate each read a Kubernetes-style Secret volume (files linked through a `..data`
link that a renewal moves). Once both volumes hold a new CA, server and client certificate
(tenantgate re-reading its own on SIGHUP), a new connection passes Checks with the new set, which
the old one could not: tenantgate then trusts the new CA only. A renewal Envoy cannot load leaves
it the set it has."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from e2e_support import AUDIENCE, ISSUER, KEY_ID, EchoBackend, base_config, received, require
from tenantgate.cli import main
from tenantgate.testing import pki, tokens
from tenantgate.testing.binaries import BinaryMissing, free_port
from tenantgate.testing.envoy import EnvoyProcess, TenantgateProcess
from tenantgate.testing.ports import on_fresh_ports

# Each renewal of Envoy's volume makes it load both secrets again (the CA, the client pair).
SDS_UPDATES = "cluster.tenantgate.client_ssl_socket_factory.ssl_context_update_by_sds"
HANDSHAKES = "cluster.tenantgate.ssl.handshake"
REFUSED_RENEWALS = "sds.tenantgate-authz-client.key_rotation_failed"
# What docs/envoy.md tells operators to alert on: a secret that did not load when Envoy read
# its SDS file, and a connection to tenantgate that found no usable TLS context.
REJECTED = "sds.tenantgate-authz-{}.update_rejected"
NOT_READY = "cluster.tenantgate.client_ssl_socket_factory.upstream_context_secrets_not_ready"
DROPPED = "cluster.tenantgate.upstream_cx_destroy"
DEADLINE = 60.0  # Envoy gives a silent connection up within its 10 s PING interval + 2 s


def issue() -> dict[str, pki.Issued]:
    """A CA of its own, with a server certificate for 127.0.0.1 and a client certificate."""
    ca = pki.certificate("tenantgate test CA", None, ca=True)
    return {"ca": pki.pem(ca), "server": pki.pem(pki.certificate("127.0.0.1", ca, server=True)),
            "client": pki.pem(pki.certificate("envoy", ca))}


def volume_files(issued: dict[str, pki.Issued], role: str) -> dict[str, bytes]:
    """A cert-manager Secret's keys: the CA, and `role`'s certificate and key."""
    cert, key = issued[role]
    return {"ca.crt": issued["ca"][0], "tls.crt": cert, "tls.key": key}


def renew(volume: Path, files: dict[str, bytes]) -> None:
    """What kubelet does to a Secret volume: the files written to a new hidden directory, a
    `..data` link to it moved over the old one in one rename, the old directory removed. The
    names Envoy and tenantgate are given are links through `..data`, never touched."""
    volume.mkdir(exist_ok=True)
    old = os.readlink(volume / "..data") if (volume / "..data").is_symlink() else None
    generation = f"..{time.monotonic_ns()}"
    (volume / generation).mkdir()
    for name, data in files.items():
        (volume / generation / name).write_bytes(data)
    os.symlink(generation, volume / "..data_tmp")
    os.replace(volume / "..data_tmp", volume / "..data")
    for name in files:
        if not (volume / name).is_symlink():
            os.symlink(f"..data/{name}", volume / name)
    if old is not None:
        for path in (volume / old).iterdir():
            path.unlink()
        (volume / old).rmdir()


def wait_until(condition: Callable[[], bool], what: str) -> None:
    give_up = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > give_up:
            pytest.fail(f"no {what} after {DEADLINE:.0f} s")
        time.sleep(0.2)


@dataclass
class Pair:
    """A mutual-TLS tenantgate and the Envoy in front of it, each with its Secret volume."""

    dir: Path
    gate: TenantgateProcess
    envoy: EnvoyProcess
    base_url: str
    key: Any

    @property
    def envoy_volume(self) -> Path:
        return self.dir / "envoy-tls"

    @property
    def gate_volume(self) -> Path:
        return self.dir / "tenantgate-tls"

    def auth(self) -> dict[str, str]:
        body = tokens.claims(ISSUER, AUDIENCE, "acme", subject="user-1")
        return {"authorization": f"Bearer {tokens.mint(self.key, 'ES256', body, kid=KEY_ID)}"}

    def stat(self, name: str) -> int:
        return self.envoy.stats(name).get(name, 0)

    def served_certificate(self) -> bytes | None:
        """The certificate tenantgate's listener shows a new client now, or None while no
        handshake completes (a client certificate of the new CA is offered)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        context.load_cert_chain(self.envoy_volume / "tls.crt", self.envoy_volume / "tls.key")
        context.set_alpn_protocols(["h2"])
        host, _, port = (self.gate.grpc or "").rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=5) as raw, \
                    context.wrap_socket(raw) as tls:
                return tls.getpeercert(binary_form=True)
        except (OSError, ssl.SSLError):
            return None

    def drop_envoy_connection(self) -> None:
        """Envoy keeps one HTTP/2 connection to tenantgate as long as it works, whatever the
        renewal: stop tenantgate until Envoy's keepalive PING gives that connection up, as it
        would for a peer gone away, so that the next Check opens a new one."""
        assert self.gate.pid is not None
        dropped = self.stat(DROPPED)
        os.kill(self.gate.pid, signal.SIGSTOP)
        try:
            wait_until(lambda: self.stat(DROPPED) > dropped, "connection dropped by Envoy")
        finally:
            os.kill(self.gate.pid, signal.SIGCONT)


@dataclass
class Gate:
    """A running mutual-TLS tenantgate on its volume, and Envoy's volume beside it."""

    dir: Path
    process: TenantgateProcess
    key: Any
    envoy_files: dict[str, bytes]  # what Envoy's volume holds first

    @property
    def envoy_volume(self) -> Path:
        return self.dir / "envoy-tls"

    def render_envoy(self, backend: EchoBackend, listen: str, admin: str) -> Path:
        """`envoy-config` for an Envoy in front of it, reading its volume; the bootstrap."""
        output = self.dir / "envoy" / "envoy.yaml"
        output.parent.mkdir(exist_ok=True)
        assert main(["envoy-config", str(self.dir / "tenantgate.yaml"), "--mode", "front",
                     "--authz", self.process.grpc or "", "--listen", listen,
                     "--upstream", backend.address, "--admin", admin, "--output", str(output),
                     *(f"--authz-tls-{flag}={self.dir}/envoy-tls/{file}"
                       for flag, file in (("ca", "ca.crt"), ("cert", "tls.crt"),
                                          ("key", "tls.key")))]) == 0
        return output


@pytest.fixture
def gate(tmp_path: Path, envoy_path: str) -> Iterator[Gate]:
    first = issue()
    renew(tmp_path / "tenantgate-tls", volume_files(first, "server"))
    envoy_files = volume_files(first, "client")
    renew(tmp_path / "envoy-tls", envoy_files)
    key = tokens.generate_key("ES256")
    (tmp_path / "jwks.json").write_text(
        json.dumps({"keys": [tokens.public_jwk(key, KEY_ID, "ES256")]}))
    config, config_path = base_config(tmp_path), tmp_path / "tenantgate.yaml"

    def start_gate() -> TenantgateProcess:
        config["listen"] = {"grpc": f"127.0.0.1:{free_port()}", "metrics": None, "tls": {
            "cert": "tenantgate-tls/tls.crt", "key": "tenantgate-tls/tls.key",
            "client_ca": "tenantgate-tls/ca.crt"}}
        config_path.write_text(yaml.safe_dump(config))
        return TenantgateProcess(config_path, grpc=config["listen"]["grpc"]).start()

    process = on_fresh_ports(start_gate)
    try:
        yield Gate(tmp_path, process, key, envoy_files)
    finally:
        process.close()


def start_envoy(gate: Gate, backend: EchoBackend,
                then: dict[str, bytes] | None = None) -> tuple[EnvoyProcess, str]:
    """An Envoy rendered for `gate` (on fresh ports) and started; with `then`, its volume is
    renewed to hold those files once rendered, before Envoy starts (envoy-config would refuse
    a file Envoy cannot load)."""
    def attempt() -> tuple[EnvoyProcess, str]:
        listen = f"127.0.0.1:{free_port()}"
        if then is not None:  # a retry renders from good files again
            renew(gate.envoy_volume, gate.envoy_files)
        output = gate.render_envoy(backend, listen, f"127.0.0.1:{free_port()}")
        if then is not None:
            renew(gate.envoy_volume, then)
        envoy = EnvoyProcess(output.read_text())
        assert "OK" in envoy.validate()
        return envoy.start(), f"http://{listen}"

    try:
        return on_fresh_ports(attempt)
    except BinaryMissing as exc:
        require(None, str(exc))
        raise


@pytest.fixture
def pair(gate: Gate, backend: EchoBackend) -> Iterator[Pair]:
    envoy, base_url = start_envoy(gate, backend)
    try:
        yield Pair(gate.dir, gate.process, envoy, base_url, gate.key)
    finally:
        envoy.close()


def test_renewed_ca_and_client_certificate_serve_new_connections_without_restarting_envoy(
        pair: Pair) -> None:
    with httpx.Client(base_url=pair.base_url, timeout=10) as client:
        echo = received(client.get("/tenants/acme/notes", headers=pair.auth()))
        assert ["x-tenant-id", "acme"] in echo["headers"]
        updates, handshakes = pair.stat(SDS_UPDATES), pair.stat(HANDSHAKES)

        second = issue()
        renew(pair.gate_volume, volume_files(second, "server"))
        renew(pair.envoy_volume, volume_files(second, "client"))
        assert pair.gate.pid is not None
        os.kill(pair.gate.pid, signal.SIGHUP)
        new_server = x509.load_pem_x509_certificate(second["server"][0]).public_bytes(
            serialization.Encoding.DER)
        wait_until(lambda: pair.served_certificate() == new_server,
                   "new certificate served by tenantgate")
        # Read once Envoy's watch on the volume saw the ..data move: never with the files in
        # a static DataSource, which Envoy reads at start only.
        wait_until(lambda: pair.stat(SDS_UPDATES) >= updates + 2, "renewed files read by Envoy")

        pair.drop_envoy_connection()
        # tenantgate now trusts the new CA only, and shows a certificate only the new CA
        # verifies: the Check passes only if Envoy's new connection uses the new set.
        echo = received(client.get("/tenants/acme/notes", headers=pair.auth()))
        assert ["x-tenant-id", "acme"] in echo["headers"]
        assert pair.stat(HANDSHAKES) == handshakes + 1  # over a new connection



def test_a_renewal_envoy_cannot_load_keeps_the_set_it_has(pair: Pair) -> None:
    # A client certificate renewed without its key (or caught mid-write) must not leave Envoy
    # without one: every Check would fail closed until the next renewal.
    with httpx.Client(base_url=pair.base_url, timeout=10) as client:
        received(client.get("/tenants/acme/notes", headers=pair.auth()))
        files = {name: (pair.envoy_volume / name).read_bytes()
                 for name in ("ca.crt", "tls.crt", "tls.key")}
        renew(pair.envoy_volume, {**files, "tls.crt": issue()["client"][0]})  # not of tls.key
        wait_until(lambda: pair.stat(REFUSED_RENEWALS) == 1, "renewal refused by Envoy")
        pair.drop_envoy_connection()
        echo = received(client.get("/tenants/acme/notes", headers=pair.auth()))
        assert ["x-tenant-id", "acme"] in echo["headers"]


@pytest.mark.parametrize("breakage", ["missing-ca", "key-of-another-certificate"])
def test_a_tls_file_envoy_cannot_load_at_start_is_counted_and_read_once_rendered_again(
        gate: Gate, backend: EchoBackend, breakage: str) -> None:
    # envoy-config refuses both; here the volume changes between rendering and Envoy's start.
    # `envoy --mode validate` still says OK (start_envoy checks it) and Envoy starts: only its
    # stats tell that every Check will fail.
    files = dict(gate.envoy_files)
    if breakage == "missing-ca":
        del files["ca.crt"]
    else:
        files["tls.key"] = issue()["client"][1]
    envoy, base_url = start_envoy(gate, backend, then=files)
    pair = Pair(gate.dir, gate.process, envoy, base_url, gate.key)
    try:
        # Counted on whichever secret completed the TLS context Envoy failed to build.
        wait_until(lambda: sum(pair.stat(REJECTED.format(secret))
                               for secret in ("ca", "client")) == 1, "secret rejected")
        with httpx.Client(base_url=base_url, timeout=10) as client:
            assert client.get("/tenants/acme/notes", headers=pair.auth()).status_code == 503
            assert pair.stat(NOT_READY) >= 1
            # A rejected CA's directory is not watched: the files made whole are read once the
            # SDS files are replaced, which rendering again does by a rename Envoy sees.
            renew(gate.envoy_volume, gate.envoy_files)
            gate.render_envoy(backend, base_url.removeprefix("http://"),
                              envoy.admin_url.removeprefix("http://"))
            wait_until(lambda: client.get("/tenants/acme/notes",
                                          headers=pair.auth()).status_code == 200,
                       "Check passed with the files read again")
            echo = received(client.get("/tenants/acme/notes", headers=pair.auth()))
            assert ["x-tenant-id", "acme"] in echo["headers"]
    finally:
        envoy.close()
