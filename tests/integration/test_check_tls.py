"""Check and health over TLS on listen.grpc (the listener Envoy calls in front mode), mutual
TLS with listen.tls.client_ca, and a renewed certificate served without a restart."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from app_support import StartedApps
from envoy.service.auth.v3.external_auth_pb2 import CheckResponse
from envoy.service.auth.v3.external_auth_pb2_grpc import AuthorizationStub
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY
from tenantgate import app as app_module
from tenantgate.app import App
from tenantgate.config import tls as tls_module
from tenantgate.errors import ConfigError
from tenantgate.testing.binaries import free_port
from tenantgate.testing.check import DevIssuer, check_request, config_document
from tenantgate.testing.pki import Issued, write_pki

SERVING = health_pb2.HealthCheckResponse.SERVING
# Each channel its own connection: a channel opened after a certificate change must make a
# new handshake, not share one gRPC keeps for an earlier channel to the same address.
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]

Start = Callable[..., Awaitable[App]]


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Issued]:
    return write_pki(tmp_path)


@pytest.fixture
def idp() -> DevIssuer:
    return DevIssuer()


@pytest.fixture
async def start_app(tmp_path: Path, idp: DevIssuer) -> AsyncIterator[Start]:
    apps = StartedApps()

    async def start(tls: dict[str, str], **listen: str) -> App:
        # write_config picks a new gRPC port each time
        return await apps.start(lambda: write_config(tmp_path, idp, tls, **listen))

    yield start
    await apps.stop_all()


def write_config(directory: Path, idp: DevIssuer, tls: dict[str, str],
                 **listen: Any) -> Path:
    document = config_document(directory, [idp.config()])
    document["listen"] = {"grpc": f"127.0.0.1:{free_port()}", "metrics": None,
                          "drain_timeout": "1s", "tls": tls, **listen}
    path = directory / "tenantgate.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def served(directory: Path, **extra: str) -> dict[str, str]:
    """listen.tls with write_pki's server certificate in `directory`."""
    return {"cert": str(directory / "server.crt"), "key": str(directory / "server.key"),
            **extra}


def address(app: App) -> str:
    assert app.runtime.config.listen.grpc is not None
    return app.runtime.config.listen.grpc


def tls_channel(app: App, ca: bytes, client: Issued | None = None) -> grpc.aio.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=client[1] if client else None,
        certificate_chain=client[0] if client else None)
    return grpc.aio.secure_channel(address(app), credentials, options=OWN_CONNECTION)


async def check(channel: grpc.aio.Channel, idp: DevIssuer) -> CheckResponse:
    request = check_request("/notes", headers={"authorization": f"Bearer {idp.token()}"})
    async with channel:
        return await AuthorizationStub(channel).Check(request, timeout=10)


def allowed(response: CheckResponse) -> bool:
    return response.status.code == 0 and response.HasField("ok_response")


async def refused(channel: grpc.aio.Channel, idp: DevIssuer) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await check(channel, idp)
    return error.value.code()


async def test_check_and_health_over_tls_and_no_plaintext(
        start_app: Start, tmp_path: Path, pki: dict[str, Issued], idp: DevIssuer) -> None:
    app = await start_app(served(tmp_path))
    response = await check(tls_channel(app, pki["ca"][0]), idp)
    assert allowed(response), response
    assert {h.header.key: h.header.value
            for h in response.ok_response.headers}["x-tenant-id"] == "acme"
    async with tls_channel(app, pki["ca"][0]) as channel:
        health = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10)
    assert health.status == SERVING
    # Before: the only listener there was, and the token crossed the network in clear text.
    plain = grpc.aio.insecure_channel(address(app), options=OWN_CONNECTION)
    assert await refused(plain, idp) == grpc.StatusCode.UNAVAILABLE


async def test_with_client_ca_only_clients_of_that_ca_get_a_check(
        start_app: Start, tmp_path: Path, pki: dict[str, Issued], idp: DevIssuer) -> None:
    app = await start_app(served(tmp_path, client_ca=str(tmp_path / "ca.crt")))
    ca = pki["ca"][0]
    assert allowed(await check(tls_channel(app, ca, pki["client"]), idp))
    for client in (None, pki["stranger"]):  # refused at the handshake: no call at all
        assert await refused(tls_channel(app, ca, client), idp) == grpc.StatusCode.UNAVAILABLE


def renew(directory: Path, into: Path, files: tuple[str, ...] = ("server.crt", "server.key")
          ) -> dict[str, Issued]:
    """A new CA and server certificate, written over `files` in `into` (a renewal that
    changes the issuer too, so a client tells the two certificates apart)."""
    directory.mkdir()
    issued = write_pki(directory)
    for name in files:
        shutil.copyfile(directory / name, into / name)
    return issued


async def test_a_renewed_certificate_is_served_to_new_connections_after_sighup(
        start_app: Start, tmp_path: Path, pki: dict[str, Issued], idp: DevIssuer) -> None:
    app = await start_app(served(tmp_path))
    old_ca = pki["ca"][0]
    # Half a renewal (the certificate, not yet its key): refused, the served pair kept.
    half = renew(tmp_path / "half", tmp_path, files=("server.crt",))
    assert await app.reload()  # the config itself is unchanged and reloads
    assert allowed(await check(tls_channel(app, old_ca), idp))
    new = renew(tmp_path / "renewed", tmp_path)
    assert half["ca"] != new["ca"]
    assert await app.reload()
    assert allowed(await check(tls_channel(app, new["ca"][0]), idp))
    assert await refused(tls_channel(app, old_ca), idp) == grpc.StatusCode.UNAVAILABLE


async def test_a_renewed_certificate_is_served_without_any_signal(
        start_app: Start, tmp_path: Path, pki: dict[str, Issued], idp: DevIssuer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # cert-manager and kubelet rewrite a mounted Secret and tell nobody.
    monkeypatch.setattr(app_module, "TLS_REREAD_SECONDS", 0.05)
    app = await start_app(served(tmp_path))
    new = renew(tmp_path / "renewed", tmp_path)
    await until_served(app, new["ca"][0], idp)
    assert await refused(tls_channel(app, pki["ca"][0]), idp) == grpc.StatusCode.UNAVAILABLE


async def until_served(app: App, ca: bytes, idp: DevIssuer) -> None:
    """Waits (up to ~10 s) for a certificate of `ca` to be served."""
    for _ in range(200):
        try:
            if allowed(await check(tls_channel(app, ca), idp)):
                return
        except grpc.aio.AioRpcError:
            await asyncio.sleep(0.05)
    pytest.fail("the renewed certificate was never served")


def internal_errors() -> float:
    return REGISTRY.get_sample_value("tenantgate_internal_errors_total") or 0.0


async def test_the_reread_outlives_a_bug_and_never_blocks_a_config_reload(
        start_app: Start, tmp_path: Path, pki: dict[str, Issued], idp: DevIssuer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app_module, "TLS_REREAD_SECONDS", 0.05)
    app = await start_app(served(tmp_path))
    failures = 0

    def bug(*args: object) -> object:
        nonlocal failures
        failures += 1
        raise RuntimeError("a bug in reading the files")

    counted = internal_errors()
    monkeypatch.setattr(tls_module, "read_tls", bug)
    for _ in range(200):  # before: the re-read task ended on the first, for good
        if failures >= 3:
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail(f"the re-read ended after {failures} failure(s)")
    assert await app.reload()  # before: the SIGHUP's reload raised and never ran
    assert internal_errors() >= counted + 3
    monkeypatch.undo()
    monkeypatch.setattr(app_module, "TLS_REREAD_SECONDS", 0.05)
    await until_served(app, renew(tmp_path / "renewed", tmp_path)["ca"][0], idp)


async def test_an_emptied_client_ca_keeps_the_served_one(
        start_app: Start, tmp_path: Path, pki: dict[str, Issued], idp: DevIssuer) -> None:
    # cert-manager's ACME issuers write an empty ca.crt. Before, it was swapped in, and from
    # then on every client's handshake failed.
    app = await start_app(served(tmp_path, client_ca=str(tmp_path / "ca.crt")))
    (tmp_path / "ca.crt").write_bytes(b"")
    assert await app.reload()
    assert allowed(await check(tls_channel(app, pki["ca"][0], pki["client"]), idp))


async def test_serve_names_an_unusable_certificate_instead_of_failing_to_bind(
        tmp_path: Path, pki: dict[str, Issued], idp: DevIssuer) -> None:
    tls = {"cert": str(tmp_path / "server.crt"), "key": str(tmp_path / "client.key")}
    app = App(str(write_config(tmp_path, idp, tls)))
    with pytest.raises(ConfigError) as error:
        await app.start()
    assert error.value.issues == ["listen.tls.key: not the private key of listen.tls.cert"]


async def test_listen_uds_stays_plaintext_beside_a_tls_listen_grpc(
        start_app: Start, tmp_path: Path, pki: dict[str, Issued], idp: DevIssuer) -> None:
    socket = tmp_path / "authz.sock"
    app = await start_app(served(tmp_path), uds=str(socket))
    assert allowed(await check(grpc.aio.insecure_channel(f"unix:{socket}"), idp))
    assert allowed(await check(tls_channel(app, pki["ca"][0]), idp))
