"""Fixtures for API-key tests: a real redis-server and real tenantgate replicas."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from apikey_support import App, Replica, StartReplica, write_config
from tenantgate.testing.binaries import BinaryMissing, in_ci
from tenantgate.testing.ports import on_fresh_ports_async
from tenantgate.testing.redis import RedisServer


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    try:
        server = RedisServer().start()
    except BinaryMissing as exc:
        if in_ci():
            raise
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    import redis

    with redis.Redis(port=redis_server.port) as client:
        client.flushall()
    return redis_server.url


@pytest.fixture
async def start_replica(tmp_path: Path, redis_url: str) -> AsyncIterator[StartReplica]:
    started: list[Replica] = []

    async def start(name: str = "a", *, admin: bool = False, allow_unknown: bool | None = None,
                    **api_keys: Any) -> Replica:
        async def attempt() -> Replica:  # write_config picks new ports each time
            path, grpc_port, admin_port = write_config(tmp_path / name, redis_url, admin=admin,
                                                       allow_unknown=allow_unknown, **api_keys)
            app = App(str(path))
            await app.start()  # a failed start stops whatever it had started
            return Replica(app, grpc_port, admin_port)

        replica = await on_fresh_ports_async(attempt)
        started.append(replica)
        return replica

    yield start
    for replica in started:
        await replica.close()
