"""An App whose admin listener cannot bind fails to start with a precise error, and leaves
nothing behind: its Check listener is closed again and no half-started server lingers."""

from __future__ import annotations

import gc
import socket
import warnings
from pathlib import Path

import apikey_support
import pytest
from apikey_support import StartReplica, write_config
from tenantgate.app import App, StartupError
from tenantgate.testing.binaries import free_port


async def test_an_admin_port_in_use_fails_the_start_and_frees_the_check_port(
        tmp_path: Path, redis_url: str) -> None:
    path, grpc_port, admin_port = write_config(tmp_path / "a", redis_url, admin=True)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", admin_port or 0))
        taken.listen()
        app = App(str(path))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a coroutine never awaited would surface here
            with pytest.raises(StartupError, match=r"admin\.listen .*: cannot listen"):
                await app.start()
            gc.collect()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", grpc_port))  # the Check listener was closed again


async def test_a_replica_whose_admin_port_was_taken_starts_on_fresh_ports(
        start_replica: StartReplica, monkeypatch: pytest.MonkeyPatch) -> None:
    # The CI failure: free_port() gave the admin listener a port another process bound first.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        handed = iter([free_port(), busy])  # the Check port, then the admin port
        monkeypatch.setattr(apikey_support, "free_port", lambda: next(handed, None) or free_port())
        replica = await start_replica("a", admin=True)
    assert replica.admin_address != f"127.0.0.1:{busy}"
