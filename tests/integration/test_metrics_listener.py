"""listen.metrics, the Prometheus endpoint: bound before the Check port, so a clash leaves no
port held, and closed when the App stops."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import pytest
import yaml
from app_support import app_on_fresh_ports
from tenantgate.app import App, StartupError
from tenantgate.testing.binaries import free_port
from tenantgate.testing.check import config_document
from tenantgate.testing.ports import ReservedPort

pytestmark = pytest.mark.integration


def write_config(directory: Path, grpc_port: int, metrics_port: int) -> Path:
    document = config_document(directory, [])
    document["listen"] = {"grpc": f"127.0.0.1:{grpc_port}",
                          "metrics": f"127.0.0.1:{metrics_port}", "drain_timeout": "0s"}
    path = directory / "tenantgate.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def bindable(port: int) -> bool:
    """Whether a server could listen on `port` now. SO_REUSEADDR, as servers set it: the
    connections the test made may linger in TIME_WAIT, which is no listener."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


async def test_a_metrics_port_in_use_fails_the_start_and_holds_no_grpc_port(
        tmp_path: Path) -> None:
    # The Check port was bound first; gRPC frees a bound port only by stopping a started
    # server, so a failed start held it for good (in a test's process, or a reused one).
    with ReservedPort() as taken:
        grpc_port = free_port()
        app = App(str(write_config(tmp_path, grpc_port, taken.port)))
        with pytest.raises(StartupError, match=f"listen.metrics 127.0.0.1:{taken.port}: "):
            await app.start()
    assert bindable(grpc_port)


async def test_stopping_the_app_closes_the_metrics_port(tmp_path: Path) -> None:
    ports: list[int] = []

    def write() -> Path:  # new ports each time
        ports[:] = [free_port(), free_port()]
        return write_config(tmp_path, *ports)

    app = await app_on_fresh_ports(write)
    metrics_port = ports[1]
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                    timeout=10) as response:
            assert b"tenantgate_checks_total" in response.read()
    finally:
        await app.stop()
    assert bindable(metrics_port)
