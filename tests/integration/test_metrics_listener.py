"""listen.metrics, the Prometheus endpoint: bound before the Check port, so a clash leaves no
port held, and closed when the App stops; a few connections served at once, each for a few
seconds at most, the rest left waiting in the listen backlog in arrival order, so that clients
holding connections open can starve neither the Check port nor, for good, a scraper."""

from __future__ import annotations

import asyncio
import gzip
import logging
import re
import select
import socket
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from app_support import app_on_fresh_ports
from envoy.service.auth.v3.external_auth_pb2_grpc import AuthorizationStub
from tenantgate.app import App, StartupError
from tenantgate.observe import metrics_listener
from tenantgate.testing.binaries import free_port
from tenantgate.testing.check import DevIssuer, check_request, config_document
from tenantgate.testing.ports import ReservedPort

pytestmark = pytest.mark.integration


# What the reported attack sent on each connection: a request line, and never the end of the
# headers.
PARTIAL_REQUEST = b"GET /metrics HTTP/1.1\r\n"
WHOLE_REQUEST = b"GET /metrics HTTP/1.0\r\n\r\n"
IDLE_PAST_THE_CAP = 24
CLIENT_PATIENCE_SECONDS = 30  # far past any server timeout used here


def write_config(
    directory: Path, grpc_port: int, metrics_port: int, issuers: list[dict[str, Any]] | None = None
) -> Path:
    document = config_document(directory, issuers or [])
    document["listen"] = {
        "grpc": f"127.0.0.1:{grpc_port}",
        "metrics": f"127.0.0.1:{metrics_port}",
        "drain_timeout": "0s",
    }
    path = directory / "tenantgate.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def bindable(port: int) -> bool:
    """Whether a server could listen on `port` now. SO_REUSEADDR, as servers set it: the
    connections the test made may linger in TIME_WAIT, which is no listener."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


async def test_a_metrics_port_in_use_fails_the_start_and_holds_no_grpc_port(tmp_path: Path) -> None:
    # The Check port was bound first; gRPC frees a bound port only by stopping a started
    # server, so a failed start held it for good (in a test's process, or a reused one).
    with ReservedPort() as taken:
        grpc_port = free_port()
        app = App(str(write_config(tmp_path, grpc_port, taken.port)))
        with pytest.raises(StartupError, match=f"listen.metrics 127.0.0.1:{taken.port}: "):
            await app.start()
    assert bindable(grpc_port)


async def test_stopping_the_app_closes_the_metrics_port(tmp_path: Path) -> None:
    ports: list[int] = []

    def write() -> Path:  # new ports each time
        ports[:] = [free_port(), free_port()]
        return write_config(tmp_path, *ports)

    app = await app_on_fresh_ports(write)
    metrics_port = ports[1]
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{metrics_port}/metrics", timeout=10
        ) as response:
            assert b"tenantgate_checks_total" in response.read()
    finally:
        await app.stop()
    assert bindable(metrics_port)


class Served:
    """An App with an issuer (inline keys) and listen.metrics, on fresh ports."""

    def __init__(self, app: App, grpc_port: int, metrics_port: int, idp: DevIssuer) -> None:
        self.app, self.grpc_port, self.metrics_port, self.idp = app, grpc_port, metrics_port, idp

    async def check(self) -> int:
        request = check_request("/notes", headers={"authorization": f"Bearer {self.idp.token()}"})
        async with grpc.aio.insecure_channel(f"127.0.0.1:{self.grpc_port}") as channel:
            response = await AuthorizationStub(channel).Check(request, timeout=10)
        return int(response.status.code)

    def scrape(self, timeout: float = 10, **headers: str) -> tuple[bytes, str | None]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.metrics_port}/metrics", headers=headers
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read(), response.headers.get("Content-Encoding")

    def connect(self, count: int, send: bytes = PARTIAL_REQUEST) -> list[socket.socket]:
        return connect(self.metrics_port, count, send)


def connect(port: int, count: int, send: bytes = PARTIAL_REQUEST) -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=CLIENT_PATIENCE_SECONDS)
        sock.sendall(send)
        sockets.append(sock)
    return sockets


@pytest.fixture
async def serving(tmp_path: Path) -> AsyncIterator[Served]:
    idp = DevIssuer()
    ports: list[int] = []

    def write() -> Path:  # new ports each time
        ports[:] = [free_port(), free_port()]
        return write_config(tmp_path, *ports, issuers=[idp.config()])

    app = await app_on_fresh_ports(write)
    try:
        yield Served(app, *ports, idp)
    finally:
        await app.stop()


@pytest.fixture
def short_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Half a second to send a request, read when the App starts: set before `serving`."""
    monkeypatch.setattr(metrics_listener, "SOCKET_TIMEOUT_SECONDS", 0.5)


@pytest.fixture
def long_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Far longer to send a request than any client here waits: a slot is free only when the
    test closes the connection holding it."""
    monkeypatch.setattr(metrics_listener, "SOCKET_TIMEOUT_SECONDS", 4 * CLIENT_PATIENCE_SECONDS)


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closes `sock` within the client's patience: the end of the stream,
    or a reset (a close that left request bytes unread)."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def all_closed_by_server(sockets: list[socket.socket]) -> bool:
    return all(closed_by_server(sock) for sock in sockets)


def close_all(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        sock.close()


def connection_threads() -> int:
    """Threads serving one connection each (socketserver names them after their target)."""
    return sum("process_request_thread" in thread.name for thread in threading.enumerate())


async def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + CLIENT_PATIENCE_SECONDS
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


def accept_queue(port: int) -> int:
    """Connections the kernel holds for the IPv4 listener on `port`, not yet accepted (Linux
    shows them as a listening socket's rx_queue)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and int(fields[1].rpartition(":")[2], 16) == port:
            return int(fields[4].partition(":")[2], 16)
    raise AssertionError(f"no listener on port {port}")


def answered(sock: socket.socket) -> bool:
    """Whether the whole answer to WHOLE_REQUEST came back: a 200 with the metrics, then the
    server's close."""
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    return answer.startswith(b"HTTP/1.0 200") and b"tenantgate_checks_total" in answer


FULL_LINE = re.compile(r"metrics listener full: (\d+) time\(s\) ")


def waits_logged(caplog: pytest.LogCaptureFixture) -> list[int]:
    """The counts the "metrics listener full" lines give, in their message."""
    return [int(m[1]) for r in caplog.records if (m := FULL_LINE.search(r.getMessage()))]


async def test_connections_past_the_cap_wait_unaccepted_and_are_served_in_turn(
    long_timeout: None, serving: Served, caplog: pytest.LogCaptureFixture
) -> None:
    # The first reported attack: each connection held a thread and a descriptor for good,
    # until the descriptors ran out and a Check failed. The first MAX_CONNECTIONS are served
    # (they wait for the rest of their request); the later ones wait in the kernel's backlog.
    cap = metrics_listener.MAX_CONNECTIONS
    with caplog.at_level(logging.WARNING, logger="tenantgate"):
        held = await asyncio.to_thread(serving.connect, cap)
        past = await asyncio.to_thread(serving.connect, IDLE_PAST_THE_CAP, WHOLE_REQUEST)
        try:
            await wait_for(
                lambda: accept_queue(serving.metrics_port) == IDLE_PAST_THE_CAP,
                "every connection past the cap waits in the backlog",
            )
            assert connection_threads() <= cap
            assert await serving.check() == 0
            # The log says how many waited, in the line's own text: the only log format
            # prints no extra fields.
            assert waits_logged(caplog) == [1]  # the first wait is said at once
            close_all(held)
            assert await asyncio.to_thread(lambda: all(answered(sock) for sock in past))
        finally:
            close_all(held + past)


class Reconnecting:
    """The second reported attack: `count` clients that each send PARTIAL_REQUEST and, as
    soon as the server closes their connection, open another, from a thread of their own."""

    def __init__(self, port: int, count: int) -> None:
        self._port = port
        self._sockets = connect(port, count)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-reconnecting")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            readable, _, _ = select.select(self._sockets, [], [], 0.05)
            for sock in readable:  # closed by the server (it sends nothing else to these)
                sock.close()
                self._sockets.remove(sock)
                self._sockets += connect(self._port, 1)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(CLIENT_PATIENCE_SECONDS)
        close_all(self._sockets)


async def test_a_scrape_is_served_while_clients_holding_every_slot_reconnect_at_once(
    short_timeout: None, serving: Served
) -> None:
    # Closing connections past the cap at accept gave every freed slot to whichever holder
    # had reconnected by then: a scraper got none in 22 s. In the backlog, a scrape waits
    # behind the connections that came before it, each served 0.5 s at most.
    cap = metrics_listener.MAX_CONNECTIONS
    holders = await asyncio.to_thread(Reconnecting, serving.metrics_port, cap)
    try:
        await wait_for(lambda: connection_threads() >= cap, "holders in every slot")
        body, _ = await asyncio.to_thread(serving.scrape, CLIENT_PATIENCE_SECONDS)
    finally:
        await asyncio.to_thread(holders.close)
    assert b"tenantgate_checks_total" in body


async def test_stopping_the_app_is_prompt_while_a_connection_waits_for_a_slot(
    long_timeout: None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The accepting thread waits for a slot before it accepts; stopping must not wait for a
    # slot to come free (with long_timeout, not before the test closes the connections).
    ports: list[int] = []

    def write() -> Path:  # new ports each time
        ports[:] = [free_port(), free_port()]
        return write_config(tmp_path, *ports)

    app = await app_on_fresh_ports(write)
    sockets: list[socket.socket] = []
    stopped = False
    try:
        with caplog.at_level(logging.WARNING, logger="tenantgate"):
            sockets += await asyncio.to_thread(
                connect, ports[1], metrics_listener.MAX_CONNECTIONS + 1
            )
            await wait_for(lambda: bool(waits_logged(caplog)), "a connection waits for a slot")
        await asyncio.wait_for(app.stop(), CLIENT_PATIENCE_SECONDS)
        stopped = True
        assert bindable(ports[1])
    finally:
        close_all(sockets)
        if not stopped:
            await app.stop()


async def test_a_partial_request_is_closed_after_the_timeout(
    short_timeout: None, serving: Served
) -> None:
    [sock] = await asyncio.to_thread(serving.connect, 1)
    try:
        assert await asyncio.to_thread(closed_by_server, sock)
    finally:
        sock.close()


def drip_until_closed(sock: socket.socket, count: int, gap: float) -> bool:
    """Send `count` header bytes one at a time, `gap` seconds apart: whether the server closed
    the connection before they were all sent."""
    for _ in range(count):
        if select.select([sock], [], [], gap)[0]:
            return closed_by_server(sock)
        try:
            sock.sendall(b"a")
        except (BrokenPipeError, ConnectionResetError):
            return True
    return False


async def test_a_request_dripped_a_byte_at_a_time_is_closed_after_the_timeout(
    short_timeout: None, serving: Served
) -> None:
    # Every byte comes well within a read's timeout; the request as a whole does not: a
    # timeout per read alone let this hold a connection slot for ever.
    [sock] = await asyncio.to_thread(serving.connect, 1, PARTIAL_REQUEST + b"X-Drip: ")
    try:
        # 60 s of dripping in all, against the server's 0.5 s for the whole request.
        assert await asyncio.to_thread(drip_until_closed, sock, 600, 0.1)
    finally:
        sock.close()


async def test_scrapes_work_again_once_idle_connections_are_gone(
    short_timeout: None, serving: Served
) -> None:
    idle = await asyncio.to_thread(serving.connect, metrics_listener.MAX_CONNECTIONS + 4)
    try:
        assert await asyncio.to_thread(all_closed_by_server, idle)
    finally:
        close_all(idle)
    plain, encoding = await asyncio.to_thread(serving.scrape)
    assert b"tenantgate_checks_total" in plain and encoding is None
    # Compressed when asked, as prometheus_client's own server answers.
    compressed, encoding = await asyncio.to_thread(serving.scrape, **{"Accept-Encoding": "gzip"})
    assert encoding == "gzip" and b"tenantgate_checks_total" in gzip.decompress(compressed)
