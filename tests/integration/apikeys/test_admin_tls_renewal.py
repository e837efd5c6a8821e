"""admin.tls renewed under a running server, as kubelet renews a mounted Secret (a `..data`
symlink swapped to a new directory): read again on SIGHUP and every TLS_REREAD_SECONDS, served
to new connections, a broken set refused and the served one kept."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import yaml
from apikey_support import ADMIN_TOKEN, write_config
from prometheus_client import REGISTRY
from tenantgate import app as app_module
from tenantgate._gen.tenantgate.admin.v1 import apikeys_pb2, apikeys_pb2_grpc
from tenantgate.app import App
from tenantgate.testing.pki import write_pki
from tenantgate.testing.ports import on_fresh_ports_async

# Each channel its own connection, so a channel opened after a renewal makes a new handshake.
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]
FILES = {"tls.crt": "server.crt", "tls.key": "server.key", "ca.crt": "ca.crt"}


class SecretVolume:
    """A directory laid out as kubelet mounts a Secret: each file a link through `..data`,
    which points at a timestamped directory and is swapped whole on an update."""

    def __init__(self, root: Path) -> None:
        self.root, self._versions = root, 0
        root.mkdir()
        for name in FILES:
            (root / name).symlink_to(f"..data/{name}")

    def publish(self, pki: Path, *, files: dict[str, str] = FILES) -> None:
        """Swap `..data` to a new directory holding `files` (mount name: file in `pki`)."""
        self._versions += 1
        version = self.root / f"..v{self._versions}"
        version.mkdir()
        for name, source in files.items():
            (version / name).write_bytes((pki / source).read_bytes())
        (self.root / "..data_tmp").symlink_to(version.name)
        os.replace(self.root / "..data_tmp", self.root / "..data")  # one rename, as kubelet


def issue(directory: Path) -> Path:
    """A new CA with its server and client certificates in `directory` (a renewal that changes
    the issuer too, so that a client tells the sets apart)."""
    directory.mkdir()
    write_pki(directory)
    return directory


@dataclass
class Admin:
    app: App
    address: str
    volume: SecretVolume  # admin.tls's cert, key and client_ca
    first: Path  # the set it started with


StartAdmin = Callable[..., Awaitable[Admin]]


@pytest.fixture
async def start_admin(tmp_path: Path, redis_url: str) -> AsyncIterator[StartAdmin]:
    apps: list[App] = []

    async def start(*, listen_tls: bool = False) -> Admin:
        """admin.tls from the volume; listen.tls too (the first set, never renewed) if asked."""
        volume = SecretVolume(tmp_path / "admin-tls")
        first = issue(tmp_path / "first")
        volume.publish(first)

        async def attempt() -> App:  # write_config picks new ports each time
            path, _, _ = write_config(tmp_path / "tg", redis_url, admin=True)
            document = yaml.safe_load(path.read_text())
            document["admin"]["tls"] = {"cert": str(volume.root / "tls.crt"),
                                        "key": str(volume.root / "tls.key"),
                                        "client_ca": str(volume.root / "ca.crt")}
            if listen_tls:
                document["listen"]["tls"] = {"cert": str(first / "server.crt"),
                                             "key": str(first / "server.key")}
            path.write_text(yaml.safe_dump(document))
            app = App(str(path))
            await app.start()
            return app

        app = await on_fresh_ports_async(attempt)
        apps.append(app)
        assert app.runtime.config.admin is not None
        return Admin(app, app.runtime.config.admin.listen, volume, first)

    yield start
    for app in apps:
        await app.stop()


def reread_failures(listener: str) -> float | None:
    return REGISTRY.get_sample_value("tenantgate_tls_reread_failures_total",
                                     {"listener": listener})


def channel(address: str, pki: Path) -> grpc.aio.Channel:
    """A client trusting only `pki`'s CA, presenting `pki`'s client certificate."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(pki / "ca.crt").read_bytes(),
        private_key=(pki / "client.key").read_bytes(),
        certificate_chain=(pki / "client.crt").read_bytes())
    return grpc.aio.secure_channel(address, credentials, options=OWN_CONNECTION)


async def list_keys(to: grpc.aio.Channel) -> apikeys_pb2.ListKeysResponse:
    return await apikeys_pb2_grpc.ApiKeyAdminStub(to).ListKeys(
        apikeys_pb2.ListKeysRequest(tenant="acme"), timeout=5,
        metadata=[("authorization", f"Bearer {ADMIN_TOKEN}")])


async def admitted(address: str, pki: Path) -> bool:
    """Whether a new connection trusting only `pki`'s CA, with `pki`'s client certificate,
    gets an admin call through; False when the handshake fails."""
    async with channel(address, pki) as fresh:
        try:
            await list_keys(fresh)
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc  # no TLS session at all
            return False
    return True


async def test_a_renewed_admin_certificate_is_served_to_new_connections_after_sighup(
        start_admin: StartAdmin, tmp_path: Path) -> None:
    admin = await start_admin()
    assert await admitted(admin.address, admin.first)
    kept = channel(admin.address, admin.first)
    await list_keys(kept)  # a connection made with the first set
    renewed = issue(tmp_path / "renewed")
    admin.volume.publish(renewed)
    assert await admitted(admin.address, admin.first), "the first set until a re-read"
    assert await admin.app.reload()  # what SIGHUP runs; the config itself is unchanged
    # Before: admin.tls was read at start only, so the first set was served until a restart,
    # and a renewed certificate never was (the first one expired under a long-lived pod).
    assert await admitted(admin.address, renewed)
    # Neither the first CA's clients (client_ca was renewed too) nor clients trusting it.
    assert not await admitted(admin.address, admin.first)
    await list_keys(kept)  # a connection already open keeps its session
    await kept.close()


async def test_a_broken_admin_set_keeps_the_served_one(
        start_admin: StartAdmin, tmp_path: Path) -> None:
    admin = await start_admin()
    failures = reread_failures("admin")
    assert failures is not None  # at 0 from the start: TenantgateTlsRereadFailing's increase()
    broken = issue(tmp_path / "broken")
    # A certificate with another certificate's key: a wrong Secret, or one written halfway.
    admin.volume.publish(broken, files={**FILES, "tls.key": "client.key"})
    assert await admin.app.reload()
    assert await admitted(admin.address, admin.first)
    assert not await admitted(admin.address, broken)
    assert reread_failures("admin") == failures + 1
    admin.volume.publish(broken)  # completed: the next read serves it
    assert await admin.app.reload()
    assert await admitted(admin.address, broken)
    assert reread_failures("admin") == failures + 1


async def test_a_renewed_admin_certificate_is_served_without_any_signal(
        start_admin: StartAdmin, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # cert-manager and kubelet rewrite a mounted Secret and tell nobody.
    monkeypatch.setattr(app_module, "TLS_REREAD_SECONDS", 0.05)
    admin = await start_admin()
    renewed = issue(tmp_path / "renewed")
    admin.volume.publish(renewed)
    for _ in range(200):  # up to ~10 s
        if await admitted(admin.address, renewed):
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("the renewed admin certificate was never served")
    assert not await admitted(admin.address, admin.first)


async def test_a_failing_listen_tls_read_does_not_stop_the_admin_one(
        start_admin: StartAdmin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    admin = await start_admin(listen_tls=True)
    listen_tls = admin.app._tls
    assert listen_tls is not None
    failures = reread_failures("grpc")
    assert failures is not None  # at 0 from the start, as admin's

    def bug() -> bool:
        raise RuntimeError("a bug in reading listen.tls's files")

    monkeypatch.setattr(listen_tls, "reread", bug)
    renewed = issue(tmp_path / "renewed")
    admin.volume.publish(renewed)
    assert await admin.app.reload()  # the listener read first fails; the reload goes on
    assert await admitted(admin.address, renewed)
    assert reread_failures("grpc") == failures + 1  # a bug: its old certificate is served
