"""The free-port race: free_port() hands out a port that another process may bind before our
server does. The helpers that start real servers notice and move to a fresh port, instead of
failing or, worse, calling a stranger that answers on that port "ready"."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
import yaml
from tenantgate.testing import postgres as postgres_helpers
from tenantgate.testing import redis as redis_helpers
from tenantgate.testing.binaries import BinaryMissing, free_port, in_ci
from tenantgate.testing.check import DevIssuer, config_document
from tenantgate.testing.envoy import ProcessFailed, TenantgateProcess


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another process 'won' the race for: bound and listening, never answering."""
    with socket.socket() as stranger:
        stranger.bind(("127.0.0.1", 0))
        stranger.listen()
        yield stranger.getsockname()[1]


def hand_out_first(taken: int, module: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make `module.free_port` return the taken port once, as if we had lost the race."""
    ports = iter([taken])
    monkeypatch.setattr(module, "free_port", lambda: next(ports, None) or free_port())


def skip_when_missing(exc: BinaryMissing) -> None:
    if in_ci():
        raise exc
    pytest.skip(str(exc))


def test_redis_server_moves_to_a_fresh_port_when_its_port_is_taken(
        taken_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    hand_out_first(taken_port, redis_helpers, monkeypatch)
    try:
        server = redis_helpers.RedisServer().start()
    except BinaryMissing as exc:
        skip_when_missing(exc)
    try:
        assert server.port != taken_port
        with redis.Redis(port=server.port, socket_timeout=5) as client:
            assert client.ping()
    finally:
        server.close()


def test_postgres_cluster_moves_to_a_fresh_port_when_its_port_is_taken(
        taken_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    hand_out_first(taken_port, postgres_helpers, monkeypatch)
    try:
        cluster = postgres_helpers.PostgresCluster().start()
    except BinaryMissing as exc:
        skip_when_missing(exc)
    try:
        assert cluster.port != taken_port
        with psycopg.connect(cluster.dsn()) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        cluster.stop()


def test_a_tenantgate_process_on_a_taken_port_fails_saying_so(
        taken_port: int, tmp_path: Path) -> None:
    # Before: the stranger accepted the readiness probe, so start() returned "ready".
    document = config_document(tmp_path, [DevIssuer().config()])
    address = f"127.0.0.1:{taken_port}"
    document["listen"]["grpc"] = address
    (tmp_path / "tenantgate.yaml").write_text(yaml.safe_dump(document))
    process = TenantgateProcess(tmp_path / "tenantgate.yaml", grpc=address)
    try:
        with pytest.raises(ProcessFailed, match=f"{taken_port}.*address already in use"):
            process.start()
        assert not process.running
        assert not process.dir.exists()  # a failed start closes itself: nothing to clean up
    finally:
        process.close()
