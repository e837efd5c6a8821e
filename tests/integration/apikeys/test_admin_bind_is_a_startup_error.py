"""The admin listener failing to bind is a start-up failure like one of listen.* (serve exits 1,
"cannot start"), not a config error (exit 2, "invalid config"): check-config passed it."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from apikey_support import write_config
from tenantgate.app import App, StartupError


async def test_an_admin_port_in_use_is_a_startup_error(tmp_path: Path, redis_url: str) -> None:
    path, _, admin_port = write_config(tmp_path / "a", redis_url, admin=True)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", admin_port or 0))
        taken.listen()
        with pytest.raises(StartupError, match=r"^admin\.listen 127\.0\.0\.1:\d+: cannot listen"):
            await App(str(path)).start()
