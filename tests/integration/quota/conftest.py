"""Throwaway redis-server / Redis Cluster for quota tests, and limiters built from YAML."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator, Mapping

import pytest
import redis
import uvloop
from tenantgate.config.load import parse_config
from tenantgate.config.model import Config
from tenantgate.quota.limiter import Limiter
from tenantgate.quota.memory import MemoryStore
from tenantgate.quota.redis import RedisStore
from tenantgate.testing.binaries import BinaryMissing, in_ci
from tenantgate.testing.redis import RedisClusterServers, RedisServer

LoopFactories = Mapping[str, Callable[[], asyncio.AbstractEventLoop]]
BASE = """
context:
  active_key: k1
  keys: [{id: k1, secret: {fromEnv: TG_QUOTA_TEST_SECRET}}]
"""


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> LoopFactories:
    """The hot-path Redis connection runs on uvloop (as `tenantgate serve` does) and on the
    stdlib loop: their transports differ. Other quota tests use the stdlib loop only."""
    if item.path.name in ("test_redis_pipe.py", "test_redis_tls.py"):
        return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
    return {"asyncio": asyncio.new_event_loop}


def _start(factory: Callable[[], RedisServer | RedisClusterServers]
           ) -> RedisServer | RedisClusterServers:
    try:
        return factory().start()
    except BinaryMissing as exc:
        if in_ci():
            pytest.fail(str(exc))
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = _start(RedisServer)
    assert isinstance(server, RedisServer)
    yield server
    server.close()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterServers]:
    cluster = _start(RedisClusterServers)
    assert isinstance(cluster, RedisClusterServers)
    yield cluster
    cluster.close()


@pytest.fixture
def fresh_redis(redis_server: RedisServer) -> RedisServer:
    with redis.Redis(port=redis_server.port) as client:
        client.flushall()
    return redis_server


@pytest.fixture(params=["memory", "redis", "cluster"])
def store_url(request: pytest.FixtureRequest) -> str | None:
    """None for the embedded store, else the URL of a flushed real Redis or Cluster."""
    if request.param == "memory":
        return None
    if request.param == "redis":
        return str(request.getfixturevalue("fresh_redis").url)
    cluster: RedisClusterServers = request.getfixturevalue("redis_cluster")
    for node in cluster.nodes:
        with redis.Redis(port=node.port) as client:
            client.flushall()
    return cluster.url


def build_config(quota_yaml: str, url: str | None = None, extra: str = "") -> Config:
    # A generous timeout: these tests are about exactness on a busy 2-core machine.
    store = f"  store: redis\n  redis: {{url: '{url}', timeout: 2s}}\n" if url else ""
    return parse_config(BASE + extra + "quota:\n  enabled: true\n" + store + quota_yaml)


@pytest.fixture
def quota_config() -> Callable[..., Config]:
    """`quota_config(quota_yaml, url=None, extra="")`: a Config with quota enabled."""
    return build_config


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TG_QUOTA_TEST_SECRET", "x" * 40)


@pytest.fixture
async def make_limiter() -> AsyncIterator[Callable[[Config], Limiter]]:
    """Limiters with a private store each (not the process-wide shared ones), closed after."""
    made: list[Limiter] = []

    def make(config: Config) -> Limiter:
        q = config.quota
        store = RedisStore(q.redis) if q.store == "redis" else MemoryStore()
        limiter = Limiter(config, store, store.close)
        made.append(limiter)
        return limiter

    yield make
    for limiter in made:
        await limiter.close()
