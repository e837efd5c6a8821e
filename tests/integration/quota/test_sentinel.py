"""A `redis+sentinel://` URL: the store asks a real Sentinel for the master and uses it."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from tenantgate.config.quota import RedisConfig
from tenantgate.quota.redis import RedisStore
from tenantgate.quota.store import Bucket
from tenantgate.testing.binaries import free_port
from tenantgate.testing.redis import RedisServer


@pytest.fixture
def sentinel(fresh_redis: RedisServer, tmp_path: Path) -> Iterator[int]:
    port = free_port()
    conf = tmp_path / "sentinel.conf"  # Sentinel rewrites its config file: give it its own
    conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
                    f"sentinel monitor mymaster 127.0.0.1 {fresh_redis.port} 1\n")
    proc = subprocess.Popen([fresh_redis.binary, str(conf), "--sentinel"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with redis.Redis(port=port) as client:
                    if client.execute_command("SENTINEL", "get-master-addr-by-name", "mymaster"):
                        break
            except redis.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("sentinel did not come up")
            time.sleep(0.05)
        yield port
    finally:
        proc.kill()
        proc.wait(timeout=10)


async def test_sentinel_url_finds_the_master_and_limits(sentinel: int,
                                                        fresh_redis: RedisServer) -> None:
    store = RedisStore(RedisConfig.model_validate(
        {"url": f"redis+sentinel://127.0.0.1:{sentinel}/mymaster"}))
    bucket = Bucket("tg:{t:acme}:plan:1", "plan", 2, 1.0, 2)
    try:
        outcomes = [await store.acquire([bucket]) for _ in range(3)]
    finally:
        await store.close()
    assert [o.admitted for o in outcomes] == [True, True, False]
    with redis.Redis(port=fresh_redis.port) as master:  # the state lives on the master
        assert master.exists("tg:{t:acme}:plan:1") == 1
