"""An App whose admin listener cannot bind fails to start with a precise error, and leaves
nothing behind: its Check listener is closed again and no half-started server lingers."""

from __future__ import annotations

import gc
import socket
import warnings
from pathlib import Path

import pytest
from apikey_support import write_config
from tenantgate.app import App
from tenantgate.errors import ConfigError


async def test_an_admin_port_in_use_fails_the_start_and_frees_the_check_port(
        tmp_path: Path, redis_url: str) -> None:
    path, grpc_port, admin_port = write_config(tmp_path / "a", redis_url, admin=True)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", admin_port or 0))
        taken.listen()
        app = App(str(path))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a coroutine never awaited would surface here
            with pytest.raises(ConfigError, match=r"admin\.listen .*: cannot listen"):
                await app.start()
            gc.collect()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", grpc_port))  # the Check listener was closed again
