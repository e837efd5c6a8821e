"""tenantgate's App serving gRPC on a free loopback TCP port, as a front Envoy reaches it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import yaml
from app_support import app_on_fresh_ports
from tenantgate.app import App
from tenantgate.testing.binaries import free_port
from tenantgate.testing.check import config_document


@asynccontextmanager
async def app_on_tcp(directory: Path) -> AsyncIterator[App]:
    def write() -> Path:  # a new gRPC port each time
        document = config_document(directory, [])
        document["listen"] = {"grpc": f"127.0.0.1:{free_port()}", "metrics": None}
        path = directory / "tenantgate.yaml"
        path.write_text(yaml.safe_dump(document))
        return path

    app = await app_on_fresh_ports(write)
    try:
        yield app
    finally:
        await app.stop()
