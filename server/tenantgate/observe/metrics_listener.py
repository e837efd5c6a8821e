"""The listen.metrics HTTP endpoint: prometheus_client's WSGI app behind a cap on connections
served at once and a deadline on each, on threads of its own (never the event loop's)."""

from __future__ import annotations

import io
import logging
import socket
import sys
import threading
import time
from socketserver import ThreadingMixIn
from typing import IO, Any, cast
from wsgiref.simple_server import ServerHandler, WSGIRequestHandler, WSGIServer
from wsgiref.types import WSGIApplication

from prometheus_client import REGISTRY, make_wsgi_app
from prometheus_client.registry import Collector

from tenantgate.observe.throttle import Throttle
from tenantgate.socket_deadline import DeadlineReader

log = logging.getLogger("tenantgate")

# Connections served at once. A scrape is one request on one connection, and one or two
# Prometheus servers scrape every few seconds: 8 leaves room for them and a person with curl.
# A connection past the cap is not accepted: it waits in the kernel's listen backlog, in
# arrival order, holding no thread or descriptor of ours, until a slot is free. Closing it at
# accept instead let 8 clients that reconnect at once keep every slot for good: a slot freed
# by the deadline went to whoever connected next, never to the scraper that came earlier.
# (Each accepted connection holds a thread and a descriptor: accepting all of them let a
# thousand idle ones use up the process's descriptors, and Checks failed.)
MAX_CONNECTIONS = 8
# Seconds a client has to send its whole request (line and headers together), and that each
# write of the answer may take. Prometheus sends its request as soon as it has connected and
# reads the answer at network speed (milliseconds in a cluster), so a slot held by a client
# doing neither is free again this soon. Read at start: tests set it lower.
SOCKET_TIMEOUT_SECONDS = 5.0
MAX_REQUEST_LINE = 65536  # as wsgiref's own handler allows
# How often the accepting thread, waiting for a slot, looks whether shutdown() was called.
SLOT_WAIT_SECONDS = 0.1


def start_metrics_listener(address: str, registry: Collector = REGISTRY) -> MetricsServer:
    """Serve `registry` on `address` (host:port; an empty host is 0.0.0.0, IPv4) from a
    daemon thread. Stop it with shutdown(), then server_close(). OSError if it cannot bind."""
    host, _, port = address.rpartition(":")
    server = MetricsServer(
        (host.strip("[]") or "0.0.0.0", int(port)),
        make_wsgi_app(registry),
        MAX_CONNECTIONS,
        SOCKET_TIMEOUT_SECONDS,
    )
    threading.Thread(target=server.serve_forever, name="tenantgate-metrics", daemon=True).start()
    return server


class MetricsServer(ThreadingMixIn, WSGIServer):
    # A stuck client never holds up shutdown or the process's exit.
    daemon_threads = True
    # Connections waiting for a slot wait here, in the kernel, holding no descriptor of ours;
    # with this many waiting, the kernel drops new SYNs. With socketserver's 5, a burst of
    # scrapers lost SYNs, which clients send again a second later.
    request_queue_size = 64

    def __init__(
        self,
        address: tuple[str, int],
        app: WSGIApplication,
        max_connections: int,
        socket_timeout: float,
    ) -> None:
        # The family the host names ("::" or "::1" is IPv6), as prometheus_client chooses it;
        # the socket server's own default is IPv4 only.
        info = socket.getaddrinfo(*address, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        self.address_family, _, _, _, sockaddr = info[0]
        self.socket_timeout = socket_timeout
        self.max_connections = max_connections
        self._slots = threading.BoundedSemaphore(max_connections)
        self._stopping = threading.Event()  # socketserver's own flag is private to it
        self._waited = 0  # connections that found every slot taken, since the log last said so
        self._waits_said = Throttle(60.0)
        self.errors_said = Throttle(60.0)
        self.metrics_app = app
        super().__init__((str(sockaddr[0]), address[1]), _Handler)
        # accept() never blocks the accepting thread, shutdown() with it: should the backlog
        # be empty after a wait for a slot, the OSError is "nothing to accept".
        self.socket.setblocking(False)

    def get_request(self) -> tuple[socket.socket, Any]:
        # A slot first, then accept: until a slot is free the connection stays in the backlog.
        # serve_forever's select() said a connection is waiting, so this is the accepting
        # thread's only wait; an OSError is what its caller takes for "nothing to accept".
        self._take_slot()
        try:
            return self.socket.accept()
        except BaseException:
            self._slots.release()
            raise

    def _take_slot(self) -> None:
        if self._slots.acquire(blocking=False):
            return
        self._say_waiting()
        while not self._slots.acquire(timeout=SLOT_WAIT_SECONDS):
            if self._stopping.is_set():
                raise OSError("metrics listener stopping")

    def shutdown(self) -> None:
        # A wait for a slot ends within SLOT_WAIT_SECONDS. For good: server_close() comes next.
        self._stopping.set()
        super().shutdown()

    def process_request(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request(request, client_address)  # a thread for this one
        except BaseException:
            self._slots.release()  # no thread started to release it
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            # The slot is free before the client sees the close: the next connection in the
            # backlog is accepted, and one this client opens again waits behind it.
            self._slots.release()
            self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client too slow or gone (a timeout, a reset) is no error of ours, and printing
        # each would let any client fill the log.
        if not isinstance(sys.exc_info()[1], OSError) and self.errors_said.ready():
            log.error("metrics request failed", exc_info=True)

    def _say_waiting(self) -> None:
        self._waited += 1  # only the accepting thread counts
        if self._waits_said.ready():
            # Times the listener had to wait, not connections: those queued behind the first
            # are accepted when slots free up without a wait of their own, and what the kernel
            # dropped past the backlog never reaches us.
            log.warning(
                "metrics listener full: %d time(s) since this was last logged all %d slots "
                "were taken and connections waited in the listen backlog",
                self._waited,
                self.max_connections,
            )
            self._waited = 0


class _Handler(WSGIRequestHandler):
    server: MetricsServer

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.socket_timeout)
        # One deadline for the whole request: a per-read timeout alone let a client sending a
        # byte within each timeout hold its slot for ever.
        self.rfile.close()  # the socket's own reader: it would keep the socket open
        deadline = time.monotonic() + self.server.socket_timeout
        self._reader = DeadlineReader(self.connection, deadline)
        self.rfile = io.BufferedReader(self._reader)

    def handle(self) -> None:
        # wsgiref's one request per connection, with the deadline lifted once the request is
        # in, and the app's errors logged rather than printed.
        self.raw_requestline = self.rfile.readline(MAX_REQUEST_LINE + 1)
        if len(self.raw_requestline) > MAX_REQUEST_LINE:
            self.requestline = self.request_version = self.command = ""
            self.send_error(414)
            return
        if not self.parse_request():
            return
        self._reader.deadline = None
        self.connection.settimeout(self.server.socket_timeout)  # each write of the answer
        # Typed as buffered files; they are binary files as ServerHandler wants.
        reader, writer = cast("IO[bytes]", self.rfile), cast("IO[bytes]", self.wfile)
        handler = _ServerHandler(reader, writer, sys.stderr, self.get_environ(), multithread=False)
        handler.request_handler = self
        handler.run(self.server.metrics_app)

    def log_message(self, format: str, *args: Any) -> None:
        """No access log: Prometheus scrapes every few seconds."""


class _ServerHandler(ServerHandler):
    request_handler: _Handler

    def log_exception(self, exc_info: Any) -> None:
        if not isinstance(exc_info[1], OSError) and self.request_handler.server.errors_said.ready():
            log.error("metrics request failed", exc_info=exc_info)
