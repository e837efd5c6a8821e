"""admin.listen unix:PATH is guarded as listen.uds is: a second tenantgate with the same path
(a copied config) refuses to start instead of binding over the live socket, taking the admin
calls of the first and leaving it without a socket once it stops; a stale socket is replaced."""

from __future__ import annotations

import socket
from pathlib import Path

import grpc
import pytest
import yaml
from apikey_support import bearer, write_config
from tenantgate._gen.tenantgate.admin.v1 import apikeys_pb2 as pb
from tenantgate._gen.tenantgate.admin.v1 import apikeys_pb2_grpc
from tenantgate.app import App, StartupError


def config_with_admin_socket(directory: Path, redis_url: str, socket_path: Path) -> str:
    path, _, _ = write_config(directory, redis_url, admin=True)
    document = yaml.safe_load(path.read_text())
    document["admin"]["listen"] = f"unix:{socket_path}"
    path.write_text(yaml.safe_dump(document))
    return str(path)


async def key_names_via(socket_path: Path) -> list[str]:
    async with grpc.aio.insecure_channel(f"unix:{socket_path}") as channel:
        listed = await apikeys_pb2_grpc.ApiKeyAdminStub(channel).ListKeys(
            pb.ListKeysRequest(tenant="acme"), metadata=bearer(), timeout=5)
    return [key.name for key in listed.keys]


async def test_a_second_process_cannot_take_over_a_live_admin_socket(
        tmp_path: Path, redis_url: str) -> None:
    admin_socket = tmp_path / "admin.sock"
    first = App(config_with_admin_socket(tmp_path / "first", redis_url, admin_socket))
    await first.start()
    try:
        async with grpc.aio.insecure_channel(f"unix:{admin_socket}") as channel:
            await apikeys_pb2_grpc.ApiKeyAdminStub(channel).CreateKey(
                pb.CreateKeyRequest(tenant="acme", name="first's key"), metadata=bearer(),
                timeout=5)
        second = App(config_with_admin_socket(tmp_path / "second", redis_url, admin_socket))
        with pytest.raises(StartupError) as refused:
            await second.start()
        assert str(refused.value) == (f"admin.listen {admin_socket}: a server is listening on "
                                      "it (in use by another process)")
        # The first still owns its socket, after the second's failed start cleaned up too.
        assert await key_names_via(admin_socket) == ["first's key"]
    finally:
        await first.stop()


async def test_a_stale_admin_socket_is_replaced(tmp_path: Path, redis_url: str) -> None:
    admin_socket = tmp_path / "admin.sock"
    with socket.socket(socket.AF_UNIX) as crashed:  # left behind by a process that died
        crashed.bind(str(admin_socket))
    app = App(config_with_admin_socket(tmp_path / "a", redis_url, admin_socket))
    await app.start()
    try:
        assert await key_names_via(admin_socket) == []
    finally:
        await app.stop()
    assert not admin_socket.exists()
