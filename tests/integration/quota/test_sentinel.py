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
from tenantgate.testing.ports import in_use, on_fresh_ports, stranger_on
from tenantgate.testing.redis import RedisServer


def start_sentinel(binary: str, master_port: int, directory: Path
                   ) -> tuple[subprocess.Popen[bytes], int]:
    """A Sentinel watching the master on a fresh port (retried while one is taken)."""
    def attempt() -> tuple[subprocess.Popen[bytes], int]:
        port = free_port()
        conf = directory / "sentinel.conf"  # Sentinel rewrites its config file: its own
        conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {directory}\n"
                        f"sentinel monitor mymaster 127.0.0.1 {master_port} 1\n")
        log = directory / "sentinel.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([binary, str(conf), "--sentinel"], stdout=out,
                                    stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 10  # only a bound: it is polled until ready
            while not _knows_the_master(port):
                if proc.poll() is not None:  # "Address already in use": on_fresh_ports retries
                    raise RuntimeError(f"sentinel exited: {log.read_text(errors='replace')}")
                if time.monotonic() > deadline:
                    raise RuntimeError("sentinel did not come up")
                time.sleep(0.05)
            if stranger_on(proc.pid, [port]) is not None:  # a stranger answered for it
                raise RuntimeError(in_use(port))
        except BaseException:
            proc.kill()
            proc.wait(timeout=10)
            raise
        return proc, port

    return on_fresh_ports(attempt)


def _knows_the_master(port: int) -> bool:
    try:
        with redis.Redis(port=port, socket_timeout=5) as client:
            return bool(client.execute_command("SENTINEL", "get-master-addr-by-name",
                                               "mymaster"))
    except redis.RedisError:  # not up yet (or not a Sentinel)
        return False


@pytest.fixture
def sentinel(fresh_redis: RedisServer, tmp_path: Path) -> Iterator[int]:
    proc, port = start_sentinel(fresh_redis.binary, fresh_redis.port, tmp_path)
    try:
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
