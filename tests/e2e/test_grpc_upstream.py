"""A gRPC service behind the generated Envoy (`envoy-config --upstream-protocol`): a real
grpc.aio backend, a real Envoy and a real tenantgate. The backend records the metadata each
call brought, so a test sees what reached it and what did not."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import h2.config
import h2.connection
import h2.events
import pytest
import yaml
from e2e_support import Stack, base_config, running_stack
from tenantgate.config.envoy import EnvoyOptions, render
from tenantgate.config.load import load_config
from tenantgate.context import KeyRing
from tenantgate.testing.envoy import EnvoyProcess

SERVICE = "echo.Echo"
CALL = f"/{SERVICE}/Call"  # answers with the metadata it received, as JSON
FAIL = f"/{SERVICE}/Fail"  # fails with a status, a message and trailing metadata
WATCH = f"/{SERVICE}/Watch"  # streams one message, then holds the stream until released
FLOOD = f"/{SERVICE}/Flood"  # streams 64 KiB messages for as long as the client takes them
FLOOD_MESSAGE_BYTES = 64 * 1024
SPOOFED = (("x-tenant-id", "globex"), ("x-tenant-context", "forged.context.value"))


class GrpcEchoBackend:
    """A grpc.aio server on a free loopback port, in its own thread and event loop."""

    def __init__(self) -> None:
        self.calls: list[dict[str, list[str]]] = []  # the metadata of each call, in order
        self.release = threading.Event()  # ends every Watch stream
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: grpc.aio.Server | None = None
        self.address = ""

    def start(self) -> GrpcEchoBackend:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(timeout=10)
        return self

    async def _serve(self) -> None:
        self._server = grpc.aio.server()
        # No serializers: requests and responses are bytes as sent.
        self._server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, {
            "Call": grpc.unary_unary_rpc_method_handler(self._call),
            "Fail": grpc.unary_unary_rpc_method_handler(self._fail),
            "Watch": grpc.unary_stream_rpc_method_handler(self._watch),
            "Flood": grpc.unary_stream_rpc_method_handler(self._flood),
        })])
        port = self._server.add_insecure_port("127.0.0.1:0")
        self.address = f"127.0.0.1:{port}"
        await self._server.start()

    def _record(self, context: grpc.aio.ServicerContext) -> dict[str, list[str]]:
        seen: dict[str, list[str]] = {}
        for key, value in context.invocation_metadata() or ():
            seen.setdefault(key, []).append(value if isinstance(value, str) else value.hex())
        self.calls.append(seen)
        return seen

    async def _call(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return json.dumps(self._record(context)).encode()

    async def _fail(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        self._record(context)
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "the backend said no",
                            trailing_metadata=(("x-backend-reason", "kept"),))
        raise AssertionError("abort returns by raising")

    async def _watch(self, request: bytes,
                     context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        self._record(context)
        yield b"first"
        while not self.release.is_set():  # a cut stream cancels this task here
            await asyncio.sleep(0.05)
        yield b"last"

    async def _flood(self, request: bytes,
                     context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        for _ in range(1024):  # 64 MiB: far more than any window; a reset cancels it here
            yield b"x" * FLOOD_MESSAGE_BYTES

    def stop(self) -> None:
        self.release.set()
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.stop(None), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


def grpc_config(directory: Path) -> dict[str, Any]:
    """base_config with routes for the echo service and an admin service needing a scope, and
    a one-call-a-minute plan for initech."""
    config = base_config(directory)
    config["policy"]["routes"][:0] = [{"path_prefix": f"/{SERVICE}/"},
                                      {"path_prefix": "/admin.Admin/", "scopes": ["admin"]}]
    config["tenants"]["registry"]["initech"] = {"plan": "tiny"}
    config["quota"] = {"enabled": True, "plans": {"standard": {"limits": ["1000/s"]},
                                                  "tiny": {"limits": ["1/min"]}}}
    return config


@contextlib.contextmanager
def grpc_stack(directory: Path, upstream: str, protocol: str,
               route_timeout: float = 15.0) -> Iterator[Stack]:
    """tenantgate (over TCP) + Envoy rendered with `protocol` towards `upstream`; the stack's
    base_url is host:port, as a gRPC channel takes it."""
    config = grpc_config(directory)
    config["listen"]["grpc"] = "127.0.0.1:0"  # a fresh port on every attempt
    with running_stack(directory, upstream=upstream, config=config,
                       upstream_protocol=protocol, route_timeout=route_timeout) as stack:
        yield dataclasses.replace(stack, base_url=stack.base_url.removeprefix("http://"))


@pytest.fixture(scope="module")
def backend() -> Iterator[GrpcEchoBackend]:
    server = GrpcEchoBackend().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, envoy_path: str,
          backend: GrpcEchoBackend) -> Iterator[Stack]:
    # --route-timeout 0, as docs/envoy.md says for streams (test_a_route_timeout_cuts_a_stream).
    with grpc_stack(tmp_path_factory.mktemp("grpc"), backend.address, "http2",
                    route_timeout=0) as s:
        yield s


@pytest.fixture(scope="module")
def key_ring(stack: Stack) -> KeyRing:
    context = load_config(stack.config_path).context
    return KeyRing({k.id: k.secret.value for k in context.keys}, context.active_key)


def bearer(stack: Stack, tenant: str) -> tuple[str, str]:
    return ("authorization", f"Bearer {stack.token(tenant)}")


async def unary(stack: Stack, method: str, *metadata: tuple[str, str],
                timeout: float = 10) -> bytes:
    async with grpc.aio.insecure_channel(stack.base_url) as channel:
        call = channel.unary_unary(method)
        answer: bytes = await call(b"ping", metadata=metadata, timeout=timeout)
        return answer


async def refused(stack: Stack, method: str, *metadata: tuple[str, str]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await unary(stack, method, *metadata)
    return failed.value


async def test_a_grpc_call_with_a_token_reaches_the_backend_with_the_signed_context(
        stack: Stack, backend: GrpcEchoBackend, key_ring: KeyRing) -> None:
    # gRPC's C-core server resets a call without `te: trailers`: that it answers at all shows
    # Envoy passed the header on.
    seen = json.loads(await unary(stack, CALL, bearer(stack, "acme"), *SPOOFED))
    # The client's spoofed copies were stripped; tenantgate's are the only ones.
    assert seen["x-tenant-id"] == ["acme"]
    assert len(seen["x-tenant-context"]) == 1
    assert key_ring.verify(seen["x-tenant-context"][0]).tenant == "acme"


async def test_the_backends_status_message_and_trailers_reach_the_client(
        stack: Stack) -> None:
    error = await refused(stack, FAIL, bearer(stack, "acme"))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.details() == "the backend said no"
    assert ("x-backend-reason", "kept") in tuple(error.trailing_metadata() or ())


@pytest.mark.parametrize(("tenant", "method", "status"), [
    pytest.param(None, CALL, grpc.StatusCode.UNAUTHENTICATED, id="no-token-401"),
    pytest.param("acme", "/admin.Admin/Call", grpc.StatusCode.PERMISSION_DENIED,
                 id="scope-missing-403"),
    pytest.param("acme", "/tenants/globex/Call", grpc.StatusCode.UNIMPLEMENTED,
                 id="cross-tenant-404"),
])
async def test_a_denial_reaches_the_grpc_client_as_a_grpc_status(
        stack: Stack, backend: GrpcEchoBackend, tenant: str | None, method: str,
        status: grpc.StatusCode) -> None:
    before = len(backend.calls)
    error = await refused(stack, method, *([bearer(stack, tenant)] if tenant else []))
    assert error.code() == status, error
    assert len(backend.calls) == before  # the backend saw nothing


async def test_a_quota_denial_is_unavailable_with_retry_after(
        stack: Stack, backend: GrpcEchoBackend) -> None:
    await unary(stack, CALL, bearer(stack, "initech"))  # the plan's one call this minute
    before = len(backend.calls)
    error = await refused(stack, CALL, bearer(stack, "initech"))
    assert error.code() == grpc.StatusCode.UNAVAILABLE, error
    assert dict(error.trailing_metadata() or ()).get("retry-after"), error
    assert len(backend.calls) == before


async def test_over_http1_a_grpc_service_is_unreachable(
        tmp_path: Path, envoy_path: str, backend: GrpcEchoBackend) -> None:
    """Why --upstream-protocol exists: HTTP/1.1 (the default) cannot carry a gRPC call."""
    with grpc_stack(tmp_path, backend.address, "http1") as stack:
        before = len(backend.calls)
        error = await refused(stack, CALL, bearer(stack, "acme"))
    assert error.code() == grpc.StatusCode.UNAVAILABLE, error
    assert len(backend.calls) == before


async def test_downstream_protocol_carries_grpc_as_h2c(
        tmp_path: Path, envoy_path: str, backend: GrpcEchoBackend) -> None:
    with grpc_stack(tmp_path, backend.address, "downstream") as stack:
        seen = json.loads(await unary(stack, CALL, bearer(stack, "acme"), *SPOOFED))
    assert seen["x-tenant-id"] == ["acme"]


async def watch(stack: Stack, backend: GrpcEchoBackend, hold: float | None) -> list[bytes]:
    """A server stream that the backend holds open after its first message, for `hold`
    seconds (None: until Envoy or the 10 s deadline ends it): the messages that arrived."""
    backend.release.clear()
    received: list[bytes] = []
    async with grpc.aio.insecure_channel(stack.base_url) as channel:
        call = channel.unary_stream(WATCH)(b"watch", metadata=(bearer(stack, "acme"),),
                                           timeout=10)
        async for message in call:
            received.append(message)
            if message == b"first" and hold is not None:
                await asyncio.sleep(hold)
                backend.release.set()
    return received


async def test_a_route_timeout_cuts_a_stream_that_outlives_it(
        tmp_path: Path, envoy_path: str, backend: GrpcEchoBackend) -> None:
    """The route timeout counts from the end of the request, which for a server stream is its
    start: a stream longer than it is reset mid-way (the client sees INTERNAL)."""
    with grpc_stack(tmp_path, backend.address, "http2", route_timeout=0.5) as stack:
        with pytest.raises(grpc.aio.AioRpcError) as cut:
            await watch(stack, backend, hold=None)
        assert stack.envoy.stats("cluster.app.upstream_rq_timeout")[
            "cluster.app.upstream_rq_timeout"] == 1
    assert cut.value.code() == grpc.StatusCode.INTERNAL, cut.value


async def test_route_timeout_0_lets_a_stream_run(stack: Stack, backend: GrpcEchoBackend) -> None:
    assert await watch(stack, backend, hold=1) == [b"first", b"last"]


@pytest.mark.parametrize("protocol", ["http2", "downstream"])
def test_the_upstream_protocols_pass_envoy_validate(tmp_path: Path, envoy_path: str,
                                                    protocol: str) -> None:
    config_path = tmp_path / "tenantgate.yaml"
    config_path.write_text(yaml.safe_dump(grpc_config(tmp_path)))
    options = EnvoyOptions(upstream_protocol=protocol)  # type: ignore[arg-type]
    envoy = EnvoyProcess(render(load_config(config_path), options), binary=envoy_path)
    try:
        assert "OK" in envoy.validate()
    finally:
        envoy.close()


def grpc_frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message, uncompressed."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def h2c_client(address: str) -> tuple[socket.socket, h2.connection.H2Connection]:
    host, port = address.rsplit(":", 1)
    connection = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=True, header_encoding="utf-8"))
    sock = socket.create_connection((host, int(port)), timeout=10)
    connection.initiate_connection()
    sock.sendall(connection.data_to_send())
    return sock, connection


@contextlib.contextmanager
def unread_streams(stack: Stack, count: int) -> Iterator[None]:
    """`count` Flood calls on one connection whose responses are never read: no WINDOW_UPDATE
    is ever sent, so each stays stalled with what the windows let through. Yields once every
    call has its response headers (the backend is streaming to all of them)."""
    sock, connection = h2c_client(stack.base_url)
    with sock:
        for _ in range(count):
            stream = connection.get_next_available_stream_id()
            connection.send_headers(stream, [
                (":method", "POST"), (":path", FLOOD), (":scheme", "http"),
                (":authority", stack.base_url), ("content-type", "application/grpc"),
                ("te", "trailers"), bearer(stack, "acme")])
            connection.send_data(stream, grpc_frame(b"flood"), end_stream=True)
        sock.sendall(connection.data_to_send())
        answered: set[int] = set()
        while len(answered) < count:
            data = sock.recv(65536)
            assert data, "Envoy closed the connection"
            for event in connection.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    assert dict(event.headers)[":status"] == "200", event.headers
                    answered.add(event.stream_id)
                assert not isinstance(event, h2.events.StreamReset), event
            sock.sendall(connection.data_to_send())  # SETTINGS and PING acks only
        yield


async def test_one_clients_unread_streams_do_not_stall_other_tenants_calls(
        tmp_path: Path, envoy_path: str, backend: GrpcEchoBackend) -> None:
    """Every call of Envoy's worker shares its HTTP/2 connections to the app. Each unread
    stream holds a stream window of the connection's window; with more of them on one
    connection than the connection window holds, the app could send nothing to anyone (a
    unary call of another tenant timed out). Envoy caps the streams per connection so that
    they never fill it, and opens another connection for more."""
    with (grpc_stack(tmp_path, backend.address, "http2", route_timeout=0) as stack,
          unread_streams(stack, 40)):
        # The generous deadline guards against a hang only: the call answers or it doesn't.
        seen = json.loads(await unary(stack, CALL, bearer(stack, "globex"), timeout=20))
        connections = stack.envoy.stats("cluster.app.upstream_cx_total")
    assert seen["x-tenant-id"] == ["globex"]
    assert connections["cluster.app.upstream_cx_total"] >= 3  # 40 streams, at most 16 each


class H2cApp:
    """An h2c server (the h2 library) on a free loopback port, in its own thread: it records
    the headers and trailers of every request and answers 204."""

    def __init__(self) -> None:
        self.requests: list[dict[str, dict[str, str]]] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = "{}:{}".format(*self._listener.getsockname()[:2])
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):  # the listener closed
            while True:
                sock, _ = self._listener.accept()
                threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        connection = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=False, header_encoding="utf-8"))
        connection.initiate_connection()
        sock.sendall(connection.data_to_send())
        pending: dict[int, dict[str, dict[str, str]]] = {}
        with sock, contextlib.suppress(OSError):
            while data := sock.recv(65536):
                for event in connection.receive_data(data):
                    self._handle(connection, event, pending)
                sock.sendall(connection.data_to_send())

    def _handle(self, connection: h2.connection.H2Connection, event: h2.events.Event,
                pending: dict[int, dict[str, dict[str, str]]]) -> None:
        if isinstance(event, h2.events.RequestReceived):
            pending[event.stream_id] = {"headers": dict(event.headers), "trailers": {}}
        elif isinstance(event, h2.events.TrailersReceived):
            pending[event.stream_id]["trailers"] = dict(event.headers)
        elif isinstance(event, h2.events.DataReceived):
            connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            self.requests.append(pending.pop(event.stream_id))
            connection.send_headers(event.stream_id, [(":status", "204")], end_stream=True)

    def close(self) -> None:
        self._listener.close()


def post_with_trailers(address: str, path: str, headers: list[tuple[str, str]],
                       trailers: list[tuple[str, str]]) -> int:
    """One h2c POST with a body and request trailers; the response status."""
    sock, connection = h2c_client(address)
    with sock:
        stream = connection.get_next_available_stream_id()
        connection.send_headers(stream, [(":method", "POST"), (":path", path),
                                         (":scheme", "http"), (":authority", address),
                                         *headers])
        connection.send_data(stream, b"body")
        connection.send_headers(stream, trailers, end_stream=True)
        sock.sendall(connection.data_to_send())
        status = 0
        while data := sock.recv(65536):
            for event in connection.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    status = int(dict(event.headers)[":status"])
                elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                    return status
            sock.sendall(connection.data_to_send())
    raise AssertionError("the connection closed before the response ended")


@pytest.mark.parametrize("protocol", ["http2", "downstream"])
def test_request_trailers_named_like_trusted_headers_never_reach_an_h2c_app(
        tmp_path: Path, envoy_path: str, protocol: str) -> None:
    app = H2cApp()
    try:
        with grpc_stack(tmp_path, app.address, protocol) as stack:
            stripped = load_config(stack.config_path).context.stripped_headers
            trailers = [(name, "forged") for name in stripped] + [("x-checksum", "kept")]
            status = post_with_trailers(stack.base_url, "/tenants/acme/upload",
                                        [bearer(stack, "acme")], trailers)
    finally:
        app.close()
    assert status == 204
    [request] = app.requests
    assert request["trailers"] == {"x-checksum": "kept"}  # trailers pass, the forged ones not
    assert request["headers"]["x-tenant-id"] == "acme"  # tenantgate's header is untouched
