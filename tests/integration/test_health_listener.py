"""listen.health: plaintext grpc.health.v1 and nothing else beside a TLS listen.grpc, for
Kubernetes' gRPC probes (which speak no TLS). It says what health on listen.grpc says, from
start to drain, and answers no Check or ShouldRateLimit."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from app_support import StartedApps
from envoy.service.auth.v3.external_auth_pb2_grpc import AuthorizationStub
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tenantgate.app import SERVICES, App, StartupError
from tenantgate.testing.binaries import free_port
from tenantgate.testing.check import DevIssuer, check_request, config_document
from tenantgate.testing.jwks_server import JwksServer
from tenantgate.testing.pki import write_pki

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

Start = Callable[..., Awaitable[App]]


def write_config(directory: Path, idp: DevIssuer, jwks: dict[str, Any] | None = None,
                 **listen: Any) -> Path:
    """listen.grpc over TLS (write_pki's server certificate) and listen.health, on new ports;
    the issuer's keys inline, or from `jwks`."""
    document = config_document(directory, [idp.config(jwks=jwks) if jwks else idp.config()])
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

    async def start(idp: DevIssuer | None = None, jwks: dict[str, Any] | None = None,
                    **listen: Any) -> App:
        issuer = idp or DevIssuer()
        # write_config picks new ports each time
        return await apps.start(lambda: write_config(tmp_path, issuer, jwks, **listen))

    yield start
    await apps.stop_all()


@pytest.fixture
def idp() -> DevIssuer:
    issuer = DevIssuer(kid="k1")
    issuer.add_key("k2")
    return issuer


@pytest.fixture
def jwks(idp: DevIssuer) -> Iterator[JwksServer]:
    # k1 only, fresh for an hour: the one fetch after start is for a Check's token signed by k2.
    with JwksServer(idp.jwks(["k1"]), max_age=3600) as server:
        yield server


def health_address(app: App) -> str:
    assert app.runtime.config.listen.health is not None
    return app.runtime.config.listen.health


def check_address(app: App) -> str:
    assert app.runtime.config.listen.grpc is not None
    return app.runtime.config.listen.grpc


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


async def refused(address: str, credentials: grpc.ChannelCredentials) -> None:
    """Until a new TLS connection to `address` is refused: listen.grpc's server has begun to
    stop (gRPC closes its port then, and drains the calls in flight)."""
    for _ in range(200):  # up to ~10 s, only a bound
        try:
            async with grpc.aio.secure_channel(address, credentials) as channel:
                await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=5)
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"{address} still took connections")


async def test_the_health_port_says_not_serving_through_the_drain_and_closes_after_it(
        start_app: Start, idp: DevIssuer, jwks: JwksServer, tmp_path: Path) -> None:
    # timeout: the held refetch must outlast the steps below on a slow machine (the 2 s
    # default would end it, deny the Check and close the port while the test still probes).
    jwks_config = {"url": jwks.jwks_url, "allow_insecure_http": True, "min_ttl": "0s",
                   "refetch_interval": "1s", "timeout": "60s"}
    app = await start_app(idp, jwks_config, drain_timeout="30s")  # the drain waits the Check
    address = health_address(app)
    credentials = grpc.ssl_channel_credentials((tmp_path / "ca.crt").read_bytes())
    # The Check in flight: its key is new, and the IdP holds the refetch's answer.
    jwks.keys = idp.jwks(["k1", "k2"])
    begun = jwks.begun
    jwks.hold()
    stopping: asyncio.Future[None] | None = None
    try:
        async with grpc.aio.secure_channel(check_address(app), credentials) as channel:
            inflight = asyncio.ensure_future(AuthorizationStub(channel).Check(check_request(
                "/notes", headers={"authorization": f"Bearer {idp.token(kid='k2')}"}),
                timeout=30))
            assert await asyncio.to_thread(jwks.wait_begun, begun + 1, 30), "no refetch"
            stopping = asyncio.ensure_future(app.stop())
            await refused(check_address(app), credentials)  # the drain has begun
            # Before: a build that closed the health port first passed; kubelet's probe would
            # then fail on a refused connection, not see NOT_SERVING, mid-drain.
            assert await probe(address) == NOT_SERVING
            assert not inflight.done()  # still draining
            jwks.release()
            response = await inflight
    finally:
        jwks.release()
        if stopping is not None:
            await stopping
    assert response.status.code == 0 and response.HasField("ok_response")
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


async def test_a_check_port_in_use_closes_the_health_listener_started_before_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_pki(tmp_path)
    started: list[str] = []
    start_listener = App._start_health_listener

    async def noting(app: App, address: str) -> None:
        await start_listener(app, address)
        started.append(address)

    monkeypatch.setattr(App, "_start_health_listener", noting)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        grpc_address = f"127.0.0.1:{taken.getsockname()[1]}"
        app = App(str(write_config(tmp_path, DevIssuer(), grpc=grpc_address)))
        with pytest.raises(StartupError) as error:
            await app.start()
    assert str(error.value) == (f"listen.grpc {grpc_address}: cannot listen: Address already "
                                "in use")
    assert started == [health_address(app)]  # it was listening when listen.grpc failed
    health_port = int(health_address(app).rpartition(":")[2])
    with socket.socket() as health_port_again:  # the failed start closed it
        health_port_again.bind(("127.0.0.1", health_port))
