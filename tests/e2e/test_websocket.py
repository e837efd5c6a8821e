"""`envoy-config --websocket`, and WebSocket handshakes through a real Envoy: Check runs on the
handshake, the app sees one tenant and a context that verifies, the upgraded stream ends after
context.ttl; without the option Envoy refuses the upgrade before Check."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import queue
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e_support import Stack, base_config, running_stack
from tenantgate.cli import main
from tenantgate.config.envoy import EnvoyOptions, bootstrap_dict
from tenantgate.config.load import load_config
from tenantgate.config.model import Config
from tenantgate.context import KeyRing
from tenantgate.testing.envoy import EnvoyProcess
from test_envoy_config import EXAMPLE_CONFIG, http_manager

TTL_SECONDS = 5  # the least context.ttl allows: the bound test waits for it
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455's handshake constant
MAX_STREAM_DURATION_STAT = "http.ingress.downstream_rq_max_duration_reached"
CHECK_CALLS_STAT = "cluster.tenantgate.upstream_rq_total"


@dataclass(frozen=True)
class Handshake:
    """What the backend received: the request line's path, every header (names lower-cased,
    in order) and when."""

    path: str
    headers: list[tuple[str, str]]
    at: float

    def values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name]


def _read_head(sock: socket.socket) -> bytes:
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            break
        head += chunk
    return head


class _Handler(socketserver.BaseRequestHandler):
    """Answers a WebSocket handshake with 101, then echoes the tunnel's bytes (opaque: no
    frames are parsed); anything else gets 400."""

    server: WebSocketBackend

    def handle(self) -> None:
        head = _read_head(self.request).decode("latin-1")
        request_line, *lines = head.split("\r\n\r\n")[0].split("\r\n")
        headers = [(k.strip().lower(), v.strip())
                   for k, _, v in (line.partition(":") for line in lines)]
        seen = Handshake(request_line.split(" ")[1], headers, time.time())
        self.server.handshakes.put(seen)
        if [v.lower() for v in seen.values("upgrade")] != ["websocket"]:
            self.request.sendall(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
            return
        accept = base64.b64encode(hashlib.sha1(seen.values("sec-websocket-key")[0].encode()
                                               + _GUID).digest()).decode()
        self.request.sendall(f"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n"
                             f"connection: Upgrade\r\nsec-websocket-accept: {accept}\r\n\r\n"
                             .encode())
        while data := self.request.recv(4096):
            self.request.sendall(data)


class WebSocketBackend(socketserver.ThreadingTCPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.handshakes: queue.Queue[Handshake] = queue.Queue()
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def address(self) -> str:
        host, port = self.server_address[:2]
        return f"{host}:{port}"

    def seen(self) -> list[Handshake]:
        found = []
        while not self.handshakes.empty():
            found.append(self.handshakes.get_nowait())
        return found


@pytest.fixture(scope="module")
def ws_backend() -> Iterator[WebSocketBackend]:
    server = WebSocketBackend()
    yield server
    server.shutdown()
    server.server_close()


def _stack(tmp_path_factory: pytest.TempPathFactory, backend: WebSocketBackend,
           websocket: bool) -> Iterator[Stack]:
    directory = tmp_path_factory.mktemp("websocket" if websocket else "no-websocket")
    config = base_config(directory)
    config["context"]["ttl"] = TTL_SECONDS
    with running_stack(directory, upstream=backend.address, config=config,
                       websocket=websocket) as stack:
        yield stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, envoy_path: str,
          ws_backend: WebSocketBackend) -> Iterator[Stack]:
    yield from _stack(tmp_path_factory, ws_backend, websocket=True)


@pytest.fixture(scope="module")
def stack_without(tmp_path_factory: pytest.TempPathFactory, envoy_path: str,
                  ws_backend: WebSocketBackend) -> Iterator[Stack]:
    yield from _stack(tmp_path_factory, ws_backend, websocket=False)


@pytest.fixture
def backend(ws_backend: WebSocketBackend) -> WebSocketBackend:
    ws_backend.seen()  # what earlier tests left
    return ws_backend


def key_ring(stack: Stack) -> KeyRing:
    context = load_config(stack.config_path).context
    return KeyRing({k.id: k.secret.value for k in context.keys}, context.active_key)


def open_websocket(stack: Stack, path: str, headers: dict[str, str], *,
                   upgrade: str | None = "websocket") -> tuple[int, socket.socket]:
    """An HTTP/1.1 WebSocket handshake through Envoy (`upgrade` None: the Upgrade header is
    among `headers`): the status and the open connection."""
    host, port = stack.base_url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    lines = [f"GET {path} HTTP/1.1", f"host: {host}:{port}",
             *([f"upgrade: {upgrade}"] if upgrade else []), "connection: Upgrade",
             "sec-websocket-version: 13",
             f"sec-websocket-key: {base64.b64encode(b'tenantgate-e2e-!').decode()}",
             *(f"{k}: {v}" for k, v in headers.items())]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = _read_head(sock)
    return int(head.split(b" ", 2)[1]), sock


def handshake_status(stack: Stack, path: str, headers: dict[str, str]) -> int:
    status, sock = open_websocket(stack, path, headers)
    sock.close()
    return status


def test_a_handshake_without_a_credential_is_refused_by_check(
        stack: Stack, backend: WebSocketBackend) -> None:
    assert handshake_status(stack, "/tenants/acme/ws", {}) == 401
    assert backend.seen() == []


def test_a_handshake_on_another_tenants_path_is_not_found(
        stack: Stack, backend: WebSocketBackend) -> None:
    assert handshake_status(stack, "/tenants/globex/ws", stack.auth("acme")) == 404
    assert backend.seen() == []


def test_an_allowed_handshake_carries_one_tenant_and_a_context_that_verifies(
        stack: Stack, backend: WebSocketBackend) -> None:
    spoofed = {"x-tenant-id": "globex", "x-tenant-context": "forged.context.value"}
    status, sock = open_websocket(stack, "/tenants/acme/ws", {**stack.auth("acme"), **spoofed})
    with sock:
        assert status == 101
        sock.sendall(b"through the tunnel")
        assert sock.recv(64) == b"through the tunnel"
    [seen] = backend.seen()
    assert seen.path == "/tenants/acme/ws"
    assert seen.values("x-tenant-id") == ["acme"]
    [context] = seen.values("x-tenant-context")
    claims = key_ring(stack).verify(context, now=seen.at)
    assert (claims.tenant, claims.subject) == ("acme", "user-1")


def test_envoy_ends_the_upgraded_stream_when_its_context_expires(
        stack: Stack, backend: WebSocketBackend) -> None:
    """Check ran once, on the handshake: past context.ttl the context the app holds no longer
    verifies, so Envoy closes the tunnel and the client must pass Check again."""
    status, sock = open_websocket(stack, "/tenants/acme/ws", stack.auth("acme"))
    with sock:
        assert status == 101
        sock.sendall(b"ping")
        assert sock.recv(64) == b"ping"
        sock.settimeout(TTL_SECONDS * 12)  # the bound closes it; only a hang reaches this
        with contextlib.suppress(ConnectionResetError):  # a reset is a close as well
            assert sock.recv(64) == b""
    assert stack.envoy.stats(MAX_STREAM_DURATION_STAT)[MAX_STREAM_DURATION_STAT] >= 1


def test_without_the_option_envoy_refuses_the_upgrade_before_check(
        stack_without: Stack, backend: WebSocketBackend) -> None:
    assert handshake_status(stack_without, "/tenants/acme/ws", stack_without.auth("acme")) == 403
    assert backend.seen() == []
    checks = stack_without.envoy.stats(CHECK_CALLS_STAT).get(CHECK_CALLS_STAT, 0)
    assert checks == 0  # refused before ext_authz: this stack has served nothing else


def test_any_case_of_websocket_is_bounded_and_other_upgrades_are_refused(
        stack: Stack, backend: WebSocketBackend) -> None:
    """The route matching `Upgrade: websocket` is the only one allowing an upgrade, so none is
    upgraded without the stream bound."""
    status, sock = open_websocket(stack, "/tenants/acme/ws",
                                  {**stack.auth("acme"), "upgrade": "WebSocket"}, upgrade=None)
    sock.close()
    assert status == 101
    status, sock = open_websocket(stack, "/tenants/acme/ws",
                                  {**stack.auth("acme"), "upgrade": "tunnel"}, upgrade=None)
    sock.close()
    assert status == 403
    assert len(backend.seen()) == 1


def test_without_the_option_connect_is_refused_before_check(stack_without: Stack) -> None:
    host, port = stack_without.base_url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"CONNECT db.internal:5432 HTTP/1.1\r\nhost: db.internal:5432\r\n\r\n")
        assert _read_head(sock).split(b" ", 2)[1] == b"404"
    assert stack_without.envoy.stats(CHECK_CALLS_STAT).get(CHECK_CALLS_STAT, 0) == 0


@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch) -> Config:
    monkeypatch.setenv("TENANTGATE_CONTEXT_KEY", "x" * 32)
    return load_config(EXAMPLE_CONFIG)


def routes(bootstrap: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = http_manager(bootstrap)["route_config"]["virtual_hosts"][0][
        "routes"]
    return found


def test_without_the_option_no_route_allows_an_upgrade(example: Config) -> None:
    bootstrap = bootstrap_dict(example, EnvoyOptions())
    assert [r["name"] for r in routes(bootstrap)] == ["app"]
    assert "upgrade" not in yaml.safe_dump(bootstrap)


def test_only_the_websocket_route_upgrades_and_it_ends_streams_after_the_context_ttl(
        example: Config) -> None:
    bootstrap = bootstrap_dict(example, EnvoyOptions(websocket=True))
    # Not on the connection manager: an upgrade the route's match misses is refused (403),
    # never upgraded without the bound.
    assert "upgrade_configs" not in http_manager(bootstrap)
    websocket, app = routes(bootstrap)
    assert websocket["match"] == {"prefix": "/", "headers": [{
        "name": "upgrade", "string_match": {"exact": "websocket", "ignore_case": True}}]}
    assert websocket["route"]["upgrade_configs"] == [{"upgrade_type": "websocket"}]
    assert websocket["route"]["max_stream_duration"] == {
        "max_stream_duration": f"{example.context.ttl:.0f}s"}
    assert websocket["route"]["rate_limits"] == app["route"]["rate_limits"]  # quota counts it
    assert app == routes(bootstrap_dict(example, EnvoyOptions()))[0]


@pytest.mark.parametrize("mode", ["sidecar", "front"])
def test_cli_websocket_renders_a_bootstrap_envoy_validates(
        example: Config, tmp_path: Path, envoy_path: str, mode: str) -> None:
    out = tmp_path / "envoy.yaml"
    assert main(["envoy-config", str(EXAMPLE_CONFIG), "--mode", mode, "--websocket",
                 "-o", str(out)]) == 0
    assert routes(yaml.safe_load(out.read_text()))[0]["name"] == "websocket"
    envoy = EnvoyProcess(out.read_text(), binary=envoy_path)
    try:
        assert "OK" in envoy.validate()
    finally:
        envoy.close()
