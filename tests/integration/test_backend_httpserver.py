"""The reference backend's HTTP server against clients that are slow or ambiguous on purpose."""

from __future__ import annotations

import select
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from tenantgate.backend.httpserver import WSGIHTTPServer, serve_in_thread


def _app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"body=" + body]


@pytest.fixture
def server() -> Iterator[WSGIHTTPServer]:
    started, thread = serve_in_thread(_app, socket_timeout=0.5)
    try:
        yield started
    finally:
        started.shutdown()
        started.server_close()
        thread.join(timeout=5)


def _drip(conn: socket.socket, start: bytes, byte: bytes) -> bytes:
    """Send `start`, then `byte` every 0.2 s until the server answers or closes: its answer."""
    conn.sendall(start)
    for _ in range(100):
        try:
            conn.sendall(byte)
        except OSError:  # reset by the server
            return b""
        ready, _, _ = select.select([conn], [], [], 0.2)
        if ready:
            return conn.recv(64)
    return b"unsent"


def test_a_client_that_drips_its_headers_is_disconnected(server: WSGIHTTPServer) -> None:
    # Each read came within the socket timeout, so a header byte every 0.2 s held a thread for
    # as long as the client liked. The request line and headers now get one timeout in all.
    with socket.create_connection(server.server_address[:2], timeout=30) as conn:
        assert _drip(conn, b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ", b"x") == b""


def test_a_client_that_drips_its_request_line_is_disconnected(server: WSGIHTTPServer) -> None:
    with socket.create_connection(server.server_address[:2], timeout=30) as conn:
        assert _drip(conn, b"GET /", b"x") == b""


def test_a_prompt_client_is_served_on_a_kept_alive_connection(server: WSGIHTTPServer) -> None:
    with socket.create_connection(server.server_address[:2], timeout=30) as conn:
        for _ in range(2):
            conn.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
            answer = b""
            while not answer.endswith(b"body=hi"):
                part = conn.recv(4096)
                assert part, answer  # not closed early
                answer += part
            assert answer.startswith(b"HTTP/1.1 200 ")


@pytest.mark.parametrize("framing", [
    b"Content-Length: 0\r\nContent-Length: 46\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: gzip\r\n",
    b"Content-Length: 46\r\nTransfer-Encoding: chunked\r\n",
], ids=["two-content-lengths", "chunked", "other-coding", "length-and-chunked"])
def test_an_ambiguous_body_length_is_a_400_and_nothing_is_smuggled(
        server: WSGIHTTPServer, framing: bytes) -> None:
    # Content-Length 0 then 46: the server read the first, and parsed the body as a second
    # request on the same connection.
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: x\r\nX-Pad: 12\r\n\r\n"
    assert len(smuggled) == 46
    with socket.create_connection(server.server_address[:2], timeout=10) as conn:
        conn.sendall(b"POST / HTTP/1.1\r\nHost: x\r\n" + framing + b"\r\n" + smuggled)
        answer = b"".join(iter(lambda: conn.recv(4096), b""))
    assert answer.startswith(b"HTTP/1.1 400 ") and answer.count(b"HTTP/1.1 ") == 1
