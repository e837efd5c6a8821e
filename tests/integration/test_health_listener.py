"""listen.health: plaintext grpc.health.v1 and nothing else beside a TLS listen.grpc, for
Kubernetes' gRPC probes (which speak no TLS). It says what health on listen.grpc says, from
start to drain, and answers no Check or ShouldRateLimit."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from envoy.service.auth.v3.external_auth_pb2_grpc import AuthorizationStub
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tenantgate.app import SERVICES, App, StartupError
from tenantgate.testing.apps import StartedApps
from tenantgate.testing.binaries import free_port
from tenantgate.testing.check import DevIssuer, check_request, config_document
from tenantgate.testing.pki import write_pki

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

Start = Callable[..., Awaitable[App]]


def write_config(directory: Path, idp: DevIssuer, **listen: Any) -> Path:
    """listen.grpc over TLS (write_pki's server certificate) and listen.health, on new ports."""
    document = config_document(directory, [idp.config()])
    document["listen"] = {"grpc": f"127.0.0.1:{free_port()}",
                          "health": f"127.0.0.1:{free_port()}", "metrics": None,
                          "drain_timeout": "1s",
                          "tls": {"cert": "server.crt", "key": "server.key"}, **listen}
    path = directory / "tenantgate.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.fixture
async def start_app(tmp_path: Path) -> AsyncIterator[Start]:
    write_pki(tmp_path)
    apps = StartedApps()

    async def start(**listen: Any) -> App:
        # write_config picks new ports each time
        return await apps.start(lambda: write_config(tmp_path, DevIssuer(), **listen))

    yield start
    await apps.stop_all()


def health_address(app: App) -> str:
    assert app.runtime.config.listen.health is not None
    return app.runtime.config.listen.health


async def probe(address: str, service: str = "") -> int:
    """What a kubelet `grpc:` probe asks: a plaintext health Check."""
    async with grpc.aio.insecure_channel(address) as channel:
        response = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5)
    return int(response.status)


async def test_a_plaintext_probe_of_the_health_port_is_answered_beside_tls(
        start_app: Start, tmp_path: Path) -> None:
    app = await start_app()
    for service in ("", *SERVICES):
        assert await probe(health_address(app), service) == SERVING, service
    # What a probe of listen.grpc itself gets, the reason for listen.health: no TLS, no answer.
    assert app.runtime.config.listen.grpc is not None
    with pytest.raises(grpc.aio.AioRpcError) as plaintext:
        await probe(app.runtime.config.listen.grpc)
    assert plaintext.value.code() == grpc.StatusCode.UNAVAILABLE
    credentials = grpc.ssl_channel_credentials((tmp_path / "ca.crt").read_bytes())
    async with grpc.aio.secure_channel(app.runtime.config.listen.grpc, credentials) as channel:
        over_tls = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5)
    assert over_tls.status == SERVING


async def test_the_health_port_answers_no_check_and_no_rate_limit(start_app: Start) -> None:
    app = await start_app()
    async with grpc.aio.insecure_channel(health_address(app)) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as check:
            await AuthorizationStub(channel).Check(check_request("/notes", headers={
                "authorization": f"Bearer {DevIssuer().token()}"}), timeout=5)
        assert check.value.code() == grpc.StatusCode.UNIMPLEMENTED
        with pytest.raises(grpc.aio.AioRpcError) as rate_limit:
            await rls_pb2_grpc.RateLimitServiceStub(channel).ShouldRateLimit(
                rls_pb2.RateLimitRequest(domain="tenantgate"), timeout=5)
        assert rate_limit.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_the_health_port_says_not_serving_before_the_check_port_serves(
        start_app: Start, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    start_listener = App._start_health_listener

    async def then_probe(app: App, address: str) -> None:
        await start_listener(app, address)
        seen.append(await probe(address))  # listen.grpc is not even bound yet

    monkeypatch.setattr(App, "_start_health_listener", then_probe)
    app = await start_app()
    # Before: gRPC's health servicer starts out SERVING, so kubelet could mark the pod ready
    # before it could answer a Check.
    assert seen == [NOT_SERVING]
    assert await probe(health_address(app)) == SERVING


async def test_the_health_port_says_not_serving_while_the_server_drains(
        start_app: Start) -> None:
    app = await start_app(shutdown_delay="2s")
    address = health_address(app)
    stopping = asyncio.ensure_future(app.stop())
    try:
        for _ in range(100):  # up to ~5 s; the delay holds the listeners open 2 s
            if await probe(address) == NOT_SERVING:
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the health port never said NOT_SERVING during the shutdown delay")
    finally:
        await stopping
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await probe(address)
    assert gone.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_health_port_in_use_is_a_startup_error_and_leaves_no_listener(
        tmp_path: Path) -> None:
    write_pki(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        health = f"127.0.0.1:{taken.getsockname()[1]}"
        path = write_config(tmp_path, DevIssuer(), health=health)
        app = App(str(path))
        with pytest.raises(StartupError) as error:
            await app.start()
    assert str(error.value) == f"listen.health {health}: cannot listen: Address already in use"
    grpc_port = int(str(app.runtime.config.listen.grpc).rpartition(":")[2])
    with socket.socket() as check_port:  # not bound by a server that never started
        check_port.bind(("127.0.0.1", grpc_port))
