"""The admin API over mutual TLS: a client certificate signed by the configured CA gets in;
no certificate, or one from another CA, is refused at the handshake."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
import yaml
from apikey_support import write_config
from tenantgate._gen.tenantgate.admin.v1 import apikeys_pb2, apikeys_pb2_grpc
from tenantgate.app import App
from tenantgate.cli import main
from tenantgate.errors import ConfigError
from tenantgate.testing.pki import Issued, write_pki


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Issued]:
    return write_pki(tmp_path)


async def _list_keys(address: str, ca: bytes, client: Issued | None
                     ) -> apikeys_pb2.ListKeysResponse:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=client[1] if client else None,
        certificate_chain=client[0] if client else None)
    async with grpc.aio.secure_channel(address, credentials) as channel:
        stub = apikeys_pb2_grpc.ApiKeyAdminStub(channel)
        return await stub.ListKeys(apikeys_pb2.ListKeysRequest(tenant="acme"), timeout=5)


async def test_admin_api_over_mtls_admits_only_clients_of_its_ca(
        tmp_path: Path, redis_url: str, pki: dict[str, Issued]) -> None:
    path, _, admin_port = write_config(tmp_path / "mtls", redis_url, admin=True)
    document = yaml.safe_load(path.read_text())
    document["admin"] = {"listen": f"127.0.0.1:{admin_port}",
                         "tls": {"cert": str(tmp_path / "server.crt"),
                                 "key": str(tmp_path / "server.key"),
                                 "client_ca": str(tmp_path / "ca.crt")}}
    path.write_text(yaml.safe_dump(document))
    app = App(str(path))
    await app.start()
    address, ca = f"127.0.0.1:{admin_port}", pki["ca"][0]
    try:
        listed = await _list_keys(address, ca, pki["client"])
        assert list(listed.keys) == []
        # The CLI with the client certificate alone: this admin API takes no token.
        cli = ["keys", "--admin", address, "--ca", str(tmp_path / "ca.crt"),
               "--cert", str(tmp_path / "client.crt"), "--key", str(tmp_path / "client.key"),
               "list", "--tenant", "acme"]
        assert await asyncio.to_thread(main, cli) == 0
        for client in (None, pki["stranger"]):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await _list_keys(address, ca, client)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE  # no TLS session at all
    finally:
        await app.stop()


@pytest.mark.parametrize(("tls", "message"), [
    ({"cert": "server.key", "key": "server.crt"}, "admin.tls.cert: not a PEM certificate"),
    ({"cert": "server.crt", "key": "server.crt"},
     "admin.tls.key: not a PEM private key (unencrypted)"),
    ({"cert": "server.crt", "key": "client.key"},
     "admin.tls.key: not the private key of admin.tls.cert"),
    ({"cert": "server.crt", "key": "server.key", "client_ca": "server.key"},
     "admin.tls.client_ca: not a PEM certificate"),
    ({"cert": "empty.pem", "key": "server.key"}, "admin.tls.cert: not a PEM certificate"),
], ids=["swapped", "key-is-a-cert", "other-key", "ca-is-a-key", "empty-cert"])
async def test_an_unusable_admin_certificate_is_named_not_reported_as_a_port_in_use(
        tmp_path: Path, redis_url: str, pki: dict[str, Issued], tls: dict[str, str],
        message: str) -> None:
    path, _, _ = write_config(tmp_path / "bad", redis_url, admin=True)
    (tmp_path / "empty.pem").write_bytes(b"")
    document = yaml.safe_load(path.read_text())
    document["admin"]["tls"] = {name: str(tmp_path / file) for name, file in tls.items()}
    path.write_text(yaml.safe_dump(document))
    app = App(str(path))
    # Before: "admin.listen 127.0.0.1:<port>: cannot listen (address in use, ...)".
    with pytest.raises(ConfigError) as refused:
        await app.start()
    assert refused.value.issues == [message]
