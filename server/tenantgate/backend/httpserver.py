"""A small threaded HTTP/1.1 (keep-alive) server for WSGI apps: runs the reference backend."""

from __future__ import annotations

import io
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tenantgate.backend.middleware import WSGIApp
from tenantgate.socket_deadline import DeadlineReader

MAX_BODY_BYTES = 1024 * 1024
# Seconds any one read or write of a client socket may take, and a whole body's read. Without
# it a client that sent its headers and never its body (or never a next request on a kept-alive
# connection) held a thread for ever; one that dripped its body a byte a second, as long. Envoy
# keeps idle upstream connections longer (an hour), but it sees the close of an idle one and
# stops using it.
SOCKET_TIMEOUT_SECONDS = 60.0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive towards Envoy; every response has a length
    server: WSGIHTTPServer

    def setup(self) -> None:
        super().setup()
        # http.server closes the connection when a read or write times out.
        self.connection.settimeout(self.server.socket_timeout)
        self.rfile.close()  # the socket's own reader: it would keep the socket open
        self._reader = DeadlineReader(self.connection)
        self.rfile = io.BufferedReader(self._reader)

    def _until(self, deadline: float | None) -> None:
        """Bound all reads up to `deadline` together (None: each read by the socket timeout)."""
        self._reader.deadline = deadline
        if deadline is None:
            self.connection.settimeout(self.server.socket_timeout)

    def handle_one_request(self) -> None:
        # The request line and headers get one socket timeout in all (and the body another, in
        # _read_body): a client sending a header byte within each read's timeout held a
        # thread for ever, and ThreadingHTTPServer starts a thread per connection, unbounded.
        self._until(time.monotonic() + self.server.socket_timeout)
        try:
            super().handle_one_request()
        finally:
            self._until(None)

    def _read_body(self, length: int) -> bytes:
        """The body, within one socket timeout in all: a TimeoutError past it, which
        http.server answers by closing the connection."""
        self._until(time.monotonic() + self.server.socket_timeout)
        parts: list[bytes] = []
        try:
            while length > 0:
                if not (part := self.rfile.read1(length)):
                    break  # the client closed early: the app sees a short body
                parts.append(part)
                length -= len(part)
        finally:
            self._until(None)
        return b"".join(parts)

    def _serve(self) -> None:
        self._until(None)  # the headers are in: the app and the response get the whole timeout
        lengths = self.headers.get_all("Content-Length") or ["0"]
        # Two lengths, or a Transfer-Encoding (which we do not decode) beside or instead of one:
        # reading by the first would take the rest of the body for the next request on this
        # connection, one Envoy shares between clients.
        if len(lengths) > 1 or "Transfer-Encoding" in self.headers:
            self.send_error(400)
            return
        length = lengths[0]
        # ASCII digits only: isdigit() alone also takes "²" (a latin-1 byte), which int() refuses.
        number = length.isascii() and length.isdigit()
        # Past 4300 digits int() raises ValueError (Python's digit limit): look at the length
        # first. 18 digits is far more than any body we take.
        if not number or len(length) > 18 or int(length) > MAX_BODY_BYTES:
            self.send_error(413 if number else 400)
            return
        if not _plain_headers(self.headers.items()):
            self.send_error(400)
            return
        body = self._read_body(int(length))
        status_headers: list[Any] = []

        def start_response(status: str, headers: list[tuple[str, str]],
                           exc_info: object = None) -> None:
            status_headers[:] = [status, headers]

        chunks = self.server.app(self._environ(body), start_response)
        payload = b"".join(chunks)
        status, headers = status_headers
        code, _, reason = status.partition(" ")
        self.send_response(int(code), reason)
        for name, value in headers:
            if name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _environ(self, body: bytes) -> dict[str, Any]:
        path, _, query = self.path.partition("?")
        environ: dict[str, Any] = {
            "REQUEST_METHOD": self.command, "PATH_INFO": path, "QUERY_STRING": query,
            "SCRIPT_NAME": "", "SERVER_NAME": self.server.server_address[0],
            "SERVER_PORT": str(self.server.server_address[1]),
            "SERVER_PROTOCOL": self.request_version, "REMOTE_ADDR": self.client_address[0],
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr, "wsgi.version": (1, 0), "wsgi.url_scheme": "http",
            "wsgi.multithread": True, "wsgi.multiprocess": False, "wsgi.run_once": False,
        }
        for name, value in self.headers.items():
            key = "HTTP_" + name.upper().replace("-", "_")
            if key in ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"):
                continue
            # Repeated headers are joined with "," as WSGI servers do.
            environ[key] = f"{environ[key]},{value}" if key in environ else value
        return environ

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.access_log:
            super().log_message(format, *args)


def _plain_headers(headers: Any) -> bool:
    """No `_` in a name (WSGI reads `x_tenant_context` as X-Tenant-Context, as Envoy's config
    refuses too) and no line break in a value (http.server unfolds obsolete line folding into
    the value, which an app might copy into a response header)."""
    return not any("_" in name or "\r" in value or "\n" in value for name, value in headers)


class WSGIHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], app: WSGIApp, access_log: bool = False,
                 socket_timeout: float = SOCKET_TIMEOUT_SECONDS) -> None:
        self.app = app
        self.access_log = access_log
        self.socket_timeout = socket_timeout
        super().__init__(address, _Handler)


def serve_in_thread(app: WSGIApp, host: str = "127.0.0.1", port: int = 0,
                    socket_timeout: float = SOCKET_TIMEOUT_SECONDS
                    ) -> tuple[WSGIHTTPServer, threading.Thread]:
    """Start serving on a thread (port 0 picks a free one); stop with server.shutdown()."""
    server = WSGIHTTPServer((host, port), app, socket_timeout=socket_timeout)
    thread = threading.Thread(target=server.serve_forever, name="tenantgate-backend", daemon=True)
    thread.start()
    return server, thread
