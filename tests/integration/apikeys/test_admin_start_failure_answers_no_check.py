"""An admin listener that cannot bind fails the start before the Check listener answers
anything, and at once: not after shutdown_delay, Checks answered meanwhile."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from apikey_support import write_config
from envoy.service.auth.v3.external_auth_pb2_grpc import AuthorizationStub
from tenantgate.admin import server as admin_server
from tenantgate.app import App, StartupError
from tenantgate.testing.check import check_request


async def test_an_admin_port_in_use_fails_the_start_before_any_check_is_answered(
        tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    path, grpc_port, admin_port = write_config(tmp_path / "a", redis_url, admin=True)
    document = yaml.safe_load(path.read_text())
    document["listen"]["shutdown_delay"] = "1h"
    path.write_text(yaml.safe_dump(document))
    answered: list[bool] = []
    start_admin = admin_server.start_admin

    async def probe_then_start(*args: Any) -> Any:
        # What Envoy sees while the admin listener binds: a Check answered or not.
        async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            try:
                await AuthorizationStub(channel).Check(check_request(), timeout=0.5)
                answered.append(True)
            except grpc.aio.AioRpcError:
                answered.append(False)
        return await start_admin(*args)

    monkeypatch.setattr(admin_server, "start_admin", probe_then_start)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", admin_port or 0))
        taken.listen()
        with pytest.raises(StartupError, match=r"^admin\.listen 127\.0\.0\.1:\d+: cannot listen"):
            await asyncio.wait_for(App(str(path)).start(), 10)
    assert answered == [False]


async def test_an_admin_port_in_use_is_said_as_bind_says_it(tmp_path: Path,
                                                             redis_url: str) -> None:
    # Before: "cannot listen (address in use, or no such directory, or not allowed)", a guess;
    # listen.grpc says bind(2)'s own reason, and so does admin.listen now.
    path, _, admin_port = write_config(tmp_path / "a", redis_url, admin=True)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", admin_port or 0))
        taken.listen()
        with pytest.raises(StartupError) as caught:
            await asyncio.wait_for(App(str(path)).start(), 10)
    assert str(caught.value) == (f"admin.listen 127.0.0.1:{admin_port}: cannot listen: "
                                 "Address already in use")
