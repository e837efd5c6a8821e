"""App.start failing: it stops at once, without the shutdown_delay and drain a serving App
waits out (nothing was served: nobody has to move away first)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
import yaml
from tenantgate.app import App, StartupError
from tenantgate.testing.check import config_document


async def test_a_start_that_fails_does_not_wait_for_shutdown_delay(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        document = config_document(tmp_path, [])
        document["listen"].update({"grpc": f"127.0.0.1:{port}", "shutdown_delay": "1h",
                                   "drain_timeout": "1h"})
        path = tmp_path / "tenantgate.yaml"
        path.write_text(yaml.safe_dump(document))
        app = App(str(path))
        # Before: the failed start slept shutdown_delay in stop() before exiting 1.
        with pytest.raises(StartupError, match=rf"^listen\.grpc 127\.0\.0\.1:{port}: "):
            await asyncio.wait_for(app.start(), 10)


def busy_config(tmp_path: Path, grpc: str) -> Path:
    document = config_document(tmp_path, [])
    document["listen"]["grpc"] = grpc
    path = tmp_path / "tenantgate.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


async def test_a_grpc_port_in_use_is_said_as_bind_says_it(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        app = App(str(busy_config(tmp_path, f"127.0.0.1:{port}")))
        with pytest.raises(StartupError) as caught:
            await app.start()
    assert str(caught.value) == (f"listen.grpc 127.0.0.1:{port}: cannot listen: Address "
                                 "already in use")


async def test_a_grpc_address_not_on_this_host_is_not_called_in_use(tmp_path: Path) -> None:
    # 192.0.2.1 is TEST-NET-1 (RFC 5737): no interface has it. Before: "cannot listen (address
    # in use, or no such directory, or not allowed)", a guess that sent operators to lsof.
    app = App(str(busy_config(tmp_path, "192.0.2.1:9001")))
    with pytest.raises(StartupError) as caught:
        await app.start()
    assert str(caught.value) == ("listen.grpc 192.0.2.1:9001: cannot listen: Cannot assign "
                                 "requested address")
