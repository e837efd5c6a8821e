"""Helpers for API-key tests: running replicas (an App each) and config files."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import yaml
from envoy.service.auth.v3 import external_auth_pb2_grpc
from envoy.service.auth.v3.external_auth_pb2 import CheckResponse
from tenantgate._gen.tenantgate.admin.v1 import apikeys_pb2_grpc
from tenantgate.app import App
from tenantgate.testing.binaries import free_port
from tenantgate.testing.check import check_request

ADMIN_TOKEN = "admin-" + secrets.token_hex(24)


class Replica:
    """One running tenantgate (an App with its own Runtime, cache and subscription)."""

    def __init__(self, app: App, grpc_port: int, admin_port: int | None) -> None:
        self.app = app
        self.grpc_address = f"127.0.0.1:{grpc_port}"
        self.admin_address = f"127.0.0.1:{admin_port}" if admin_port else None
        self._channel = grpc.aio.insecure_channel(self.grpc_address)
        self._check = external_auth_pb2_grpc.AuthorizationStub(self._channel)

    async def check(self, api_key: str | None, request_id: str = "req-1",
                    path: str = "/v1/things") -> CheckResponse:
        headers = {"x-api-key": api_key} if api_key is not None else {}
        return await self._check.Check(check_request(path, headers=headers,
                                                     request_id=request_id), timeout=5)

    def admin(self) -> tuple[grpc.aio.Channel, apikeys_pb2_grpc.ApiKeyAdminStub]:
        assert self.admin_address is not None
        channel = grpc.aio.insecure_channel(self.admin_address)
        return channel, apikeys_pb2_grpc.ApiKeyAdminStub(channel)

    async def close(self) -> None:
        await self._channel.close()
        await self.app.stop()


def write_config(directory: Path, redis_url: str, *, admin: bool,
                 allow_unknown: bool | None = None, **api_keys: Any) -> tuple[
        Path, int, int | None]:
    """A config file with API keys on; returns (path, Check port, admin port or None)."""
    directory.mkdir(parents=True, exist_ok=True)
    shared = directory.parent  # replicas share the context key and the hashing secret
    if not (shared / "context.key").exists():
        (shared / "context.key").write_text(secrets.token_hex(32))
    hash_key = shared / "apikeys-hash.key"
    if not hash_key.exists():
        hash_key.write_text(secrets.token_hex(32))
    (shared / "admin.token").write_text(ADMIN_TOKEN)
    grpc_port = free_port()
    document: dict[str, Any] = {
        "listen": {"grpc": f"127.0.0.1:{grpc_port}", "metrics": None, "drain_timeout": 0.1,
                   "uvloop": False},
        "context": {"active_key": "c1",
                    "keys": [{"id": "c1", "secret": {"fromFile": str(shared / "context.key")}}]},
        "tenants": {"registry": {"acme": {"plan": "pro"}, "globex": {}},
                    **({} if allow_unknown is None else {"allow_unknown": allow_unknown})},
        "audit": {"path": str(directory / "audit.log"), "sample_allow": 1.0},
        "api_keys": {"hash_secret": {"fromFile": str(hash_key)}, "redis_url": redis_url,
                     "usage_flush_interval": "100ms", **api_keys},
    }
    admin_port = None
    if admin:
        admin_port = free_port()
        document["admin"] = {"listen": f"127.0.0.1:{admin_port}",
                             "token": {"fromFile": str(shared / "admin.token")}}
    path = directory / "tenantgate.yaml"
    path.write_text(yaml.safe_dump(document))
    return path, grpc_port, admin_port


StartReplica = Callable[..., Awaitable[Replica]]


def bearer(token: str = ADMIN_TOKEN) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]
