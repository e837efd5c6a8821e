"""A JWKS endpoint that misbehaves on the wire (drips its body, sends without end) is a real
HTTP server on a real socket: it must cost a Check no more than `jwks.timeout` and the fetch no
more memory than the JWKS size limit."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from envoy.service.auth.v3.external_auth_pb2 import CheckResponse
from tenantgate.config.model import Config
from tenantgate.decision import Reason
from tenantgate.identity.jwks import MAX_JWKS_BYTES
from tenantgate.testing.check import DevIssuer, LocalCheck, build_config, check_request


class HostileEndpoint:
    """Answers every request with 200 and a Content-Length of `length`, then sends the body in
    `chunk`-byte pieces every `interval` seconds until done or the client hangs up."""

    def __init__(self, length: int, chunk: int, interval: float) -> None:
        self.length, self.chunk, self.interval = length, chunk, interval
        self.sent = 0  # body bytes written, over all connections
        self.hangups = 0  # connections the client closed before the whole body was sent
        self.served = 0  # connections that got the whole body
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}/jwks.json"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            head = (f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    f"content-length: {self.length}\r\n\r\n")
            try:
                conn.sendall(head.encode())
                piece = b" " * self.chunk
                for _ in range(0, self.length, self.chunk):
                    conn.sendall(piece)
                    with self._lock:
                        self.sent += len(piece)
                    time.sleep(self.interval)
            except OSError:
                with self._lock:
                    self.hangups += 1  # the client hung up mid-body: what we want
                return
            with self._lock:
                self.served += 1

    def __enter__(self) -> HostileEndpoint:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._listener.close()


@pytest.fixture
def idp() -> DevIssuer:
    return DevIssuer(issuer="https://idp.test", name="idp")


def config_for(tmp_path: Path, idp: DevIssuer, url: str, timeout: str) -> Config:
    return build_config(tmp_path, [idp.config(jwks={"url": url, "allow_insecure_http": True,
                                                     "timeout": timeout})])


@pytest.fixture
def dripping() -> Iterator[HostileEndpoint]:
    # 1 byte every 50 ms: each read is well inside any per-read timeout, the body takes 50 s.
    with HostileEndpoint(length=1000, chunk=1, interval=0.05) as endpoint:
        yield endpoint


async def test_jwks_endpoint_dripping_its_body_cannot_hold_a_check_past_the_timeout(
        tmp_path: Path, idp: DevIssuer, dripping: HostileEndpoint) -> None:
    async def check() -> tuple[CheckResponse, dict[str, Any] | None]:
        async with LocalCheck(config_for(tmp_path, idp, dripping.url, "500ms")) as gate:
            return await gate.check(check_request(
                "/notes", headers={"authorization": f"Bearer {idp.token()}"}))

    # The body takes 50 s: without the 500 ms bound on the whole fetch this times out.
    response, audit = await asyncio.wait_for(check(), timeout=10)
    assert audit is not None and audit["reason"] == Reason.KEYSET_UNAVAILABLE
    assert response.denied_response.status.code == 503
    # The fetches reached the endpoint and gave up mid-body (the server sees the hang-up at
    # its next write); the deadline only keeps a failure from hanging.
    deadline = time.monotonic() + 10
    while dripping.hangups < 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert dripping.hangups >= 1
    assert dripping.served == 0


@pytest.fixture
def flooding() -> Iterator[HostileEndpoint]:
    # 256 MiB as fast as the socket takes it.
    with HostileEndpoint(length=256 * 1024 * 1024, chunk=64 * 1024, interval=0) as endpoint:
        yield endpoint


async def test_jwks_endpoint_sending_a_huge_body_is_cut_off_at_the_size_limit(
        tmp_path: Path, idp: DevIssuer, flooding: HostileEndpoint) -> None:
    async with LocalCheck(config_for(tmp_path, idp, flooding.url, "30s")) as gate:
        _, audit = await gate.check(check_request(
            "/notes", headers={"authorization": f"Bearer {idp.token()}"}))
    assert audit is not None and audit["reason"] == Reason.KEYSET_UNAVAILABLE
    # What the client read is bounded by the limit; what the server wrote besides it is only
    # what the socket buffers took before the client hung up.
    assert flooding.sent < MAX_JWKS_BYTES + 16 * 1024 * 1024
