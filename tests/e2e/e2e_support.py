"""Real Envoy stacks for the e2e suite (tenantgate + Envoy + a backend) and an echo backend."""

from __future__ import annotations

import contextlib
import json
import queue
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any

import h2.config
import h2.connection
import h2.events
import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from tenantgate.config.envoy import EnvoyOptions, render
from tenantgate.config.load import load_config
from tenantgate.config.quota import Rate
from tenantgate.testing import tokens
from tenantgate.testing.binaries import BinaryMissing, free_port, in_ci
from tenantgate.testing.envoy import EnvoyProcess, TenantgateProcess
from tenantgate.testing.ports import on_fresh_ports

ISSUER = "https://issuer.e2e.test/"
AUDIENCE = "notes"
TENANTS = ("acme", "globex", "initech")
KEY_ID = "e2e-1"


def require(found: object, what: str) -> None:
    """A missing real binary skips locally and fails under CI=true."""
    if found is None:
        message = f"{what} not installed"
        if in_ci():
            pytest.fail(f"{message} (CI=true: required)")
        pytest.skip(message)


@dataclass
class Stack:
    """One running tenantgate + Envoy pair and what a test needs to talk to them."""

    dir: Path
    config_path: Path
    signing_key: Any
    tenantgate: TenantgateProcess
    envoy: EnvoyProcess
    base_url: str
    extra: dict[str, Any] = field(default_factory=dict)

    def token(self, tenant: str | None, subject: str = "user-1", **claims: Any) -> str:
        body = tokens.claims(ISSUER, AUDIENCE, tenant, subject=subject, **claims)
        return tokens.mint(self.signing_key, "ES256", body, kid=KEY_ID)

    def auth(self, tenant: str, **claims: Any) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token(tenant, **claims)}"}

    def client(self, http2: bool = False) -> httpx.Client:
        # http2 without http1: h2c with prior knowledge, as gRPC-style clients speak it.
        return httpx.Client(base_url=self.base_url, http1=not http2, http2=http2, timeout=10)


def raw_h2_request(base_url: str, method: str, path: str,
                   headers: dict[str, str]) -> tuple[int, dict[str, str]]:
    """One HTTP/2 (h2c) request sent exactly as given: httpx upper-cases methods, and a client
    that sends `post` is what a test of that needs. Returns the status and response headers."""
    host, port = base_url.removeprefix("http://").rsplit(":", 1)
    connection = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=True, header_encoding="utf-8", validate_outbound_headers=False,
        normalize_outbound_headers=False))
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        connection.initiate_connection()
        stream = connection.get_next_available_stream_id()
        connection.send_headers(stream, [(":method", method), (":path", path),
                                         (":scheme", "http"), (":authority", host),
                                         *headers.items()], end_stream=True)
        sock.sendall(connection.data_to_send())
        status, answer = 0, {}
        while data := sock.recv(65536):
            for event in connection.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    answer = {str(k): str(v) for k, v in event.headers}
                    status = int(answer[":status"])
                elif isinstance(event, h2.events.DataReceived):
                    connection.acknowledge_received_data(event.flow_controlled_length, stream)
                elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                    return status, answer
            sock.sendall(connection.data_to_send())
    raise AssertionError(f"{method} {path}: the connection closed before the response ended")


def base_config(directory: Path, *, jwks: dict[str, Any] | None = None) -> dict[str, Any]:
    """A tenantgate config for two tenants with `/tenants/{tenant}/**` bound to the caller."""
    (directory / "ctx.key").write_text(secrets.token_hex(32))
    return {
        "listen": {"grpc": f"127.0.0.1:{free_port()}", "uds": str(directory / "authz.sock"),
                   "metrics": None},
        "issuers": [{"name": "e2e", "issuer": ISSUER, "audiences": [AUDIENCE],
                     "jwks": jwks or {"file": "jwks.json"}, "tenants": list(TENANTS)}],
        "tenants": {"registry": {t: {"plan": "standard"} for t in TENANTS}},
        "policy": {"routes": [{"path": "/tenants/{tenant}/**"}]},
        "context": {"active_key": "k1", "keys": [{"id": "k1", "secret": {"fromFile": "ctx.key"}}]},
        "audit": {"enabled": True, "path": str(directory / "audit.log"), "sample_allow": 0.0},
    }


@contextlib.contextmanager
def running_stack(directory: Path, *, upstream: str, config: dict[str, Any] | None = None,
                  mode: str = "sidecar", rate_limit: bool | None = None,
                  authz_timeout: float = 1.0, key: Any = None,
                  client_limit: Rate | None = None,
                  **envoy_options: Any) -> Iterator[Stack]:
    """Write keys and config, render the bootstrap with `envoy-config`'s renderer, start both.
    `envoy_options`: any other EnvoyOptions field (upstream_protocol, route_timeout, ...)."""
    try:
        key = key or tokens.generate_key("ES256")
        (directory / "jwks.json").write_text(
            json.dumps({"keys": [tokens.public_jwk(key, KEY_ID, "ES256")]}))
        cfg = config or base_config(directory)
        config_path = directory / "tenantgate.yaml"

        def attempt() -> tuple[TenantgateProcess, EnvoyProcess, str]:
            # Fresh ports on every attempt: a retry follows a port another process took first.
            for name in ("grpc", "metrics"):
                if cfg["listen"].get(name):
                    cfg["listen"][name] = f"127.0.0.1:{free_port()}"
            config_path.write_text(yaml.safe_dump(cfg))
            listen = f"127.0.0.1:{free_port()}"
            options = EnvoyOptions(mode=mode, listen=listen, upstream=upstream,  # type: ignore[arg-type]
                                   admin=f"127.0.0.1:{free_port()}", rate_limit=rate_limit,
                                   authz_timeout=authz_timeout, client_limit=client_limit,
                                   **envoy_options)
            bootstrap = render(load_config(config_path), options)
            (directory / "envoy.yaml").write_text(bootstrap)
            envoy = EnvoyProcess(bootstrap)
            gate = TenantgateProcess(config_path, grpc=cfg["listen"].get("grpc"),
                                     uds=cfg["listen"].get("uds"))
            try:
                return gate.start(), envoy.start(), listen
            except BaseException:
                envoy.close()
                gate.close()
                raise

        gate, envoy, listen = on_fresh_ports(attempt)
        try:
            yield Stack(directory, config_path, key, gate, envoy, f"http://{listen}")
        finally:
            envoy.close()
            gate.close()
    except BinaryMissing as exc:
        require(None, str(exc))


def with_metrics(config: dict[str, Any]) -> dict[str, Any]:
    """Turn on tenantgate's Prometheus listener (base_config leaves it off) on a free port."""
    config["listen"]["metrics"] = f"127.0.0.1:{free_port()}"
    return config


def tenantgate_metric(stack: Stack, sample: str, **labels: str) -> float:
    """One sample scraped from the running tenantgate's /metrics (0 when the series is absent);
    the stack's config must have come through `with_metrics`."""
    address = yaml.safe_load(stack.config_path.read_text())["listen"]["metrics"]
    assert address, "tenantgate_metric needs a config with listen.metrics (with_metrics)"
    text = httpx.get(f"http://{address}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == sample and all(found.labels.get(k) == v for k, v in labels.items()):
                return float(found.value)
    return 0.0


def audit_lines(stack: Stack) -> list[dict[str, Any]]:
    path = stack.dir / "audit.log"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]



class _Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive towards Envoy

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        body = json.dumps({
            "method": self.command, "path": self.path,
            # Every copy of every header, names lower-cased, in arrival order.
            "headers": [[k.lower(), v] for k, v in self.headers.items()],
        }).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("x-echo-backend", "1")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


class EchoBackend:
    """Threaded echo server on 127.0.0.1:<free port>."""

    def __init__(self) -> None:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"{host}:{port}"

    def start(self) -> EchoBackend:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def received(response: Any) -> dict[str, Any]:
    """The echo of a response that reached the backend (fails the test when it did not)."""
    assert response.headers.get("x-echo-backend") == "1", (
        f"request did not reach the backend: {response.status_code} {response.text[:200]}")
    data: dict[str, Any] = response.json()
    return data


def header_values(echo: dict[str, Any], name: str) -> list[str]:
    return [v for k, v in echo["headers"] if k == name]


DEMO_READY = "Ctrl-C stops everything."


@dataclass
class DemoRun:
    """`tenantgate demo` as a child, its output read by a thread (so no deadline here waits
    on a readline() while the demo hangs): `lines` so far, `pending` the rest (None at the end).
    """

    process: subprocess.Popen[str]
    pending: queue.Queue[str | None]
    lines: list[str] = field(default_factory=list)

    @classmethod
    def start(cls, port: int, *, env: dict[str, str] | None = None,
              sigint_ignored: bool = False) -> DemoRun:
        """Started and read until it is ready, fails, or 90 s pass. `sigint_ignored`: as a
        script's `demo &` starts it (a shell without job control ignores SIGINT in background
        jobs), and Ctrl-C must still stop the demo."""
        process = subprocess.Popen(
            [sys.executable, "-c", "import sys; from tenantgate.cli import main; sys.exit(main())",
             "demo", "--port", str(port), "--for-seconds", "120"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
            preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
            if sigint_ignored else None)
        assert process.stdout is not None
        run = cls(process, queue.Queue())
        threading.Thread(target=_pump, args=(process.stdout, run.pending), daemon=True).start()
        deadline = time.monotonic() + 90
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = run.pending.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            run.lines.append(line)
            if DEMO_READY in line or "[failed]" in line:
                break
        return run

    @property
    def ready(self) -> bool:
        return any(DEMO_READY in line for line in self.lines)

    def stop(self) -> str:
        """Ctrl-C, then its SIGTERM path (which stops what it started), then a kill; the rest
        of its output, up to its end. Raises AssertionError when Ctrl-C did not stop it."""
        self.process.send_signal(signal.SIGINT)
        stopped_by_ctrl_c = True
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            stopped_by_ctrl_c = False
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()  # reaped here, not in a later test's garbage collection
        rest = []
        try:
            while (line := self.pending.get(timeout=30)) is not None:
                rest.append(line)
        finally:
            assert self.process.stdout is not None
            self.process.stdout.close()
        output = "".join(rest)
        assert stopped_by_ctrl_c, ("demo did not stop within 60 s of Ctrl-C:\n"
                                   + "".join(self.lines) + output)
        return output


def _pump(stream: IO[str], into: queue.Queue[str | None]) -> None:
    for line in stream:
        into.put(line)
    into.put(None)
