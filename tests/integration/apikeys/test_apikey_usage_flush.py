"""Usage counters reach Redis once: what Redis refused or never received is sent again, what it
may have applied (a reply lost after the write) is not, and a refused last-used write does not
take the counts with it. Against a real redis-server."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from tenantgate.config.load import parse_config
from tenantgate.identity.apikey_manager import KeyManager
from tenantgate.identity.apikeys import ApiKeys
from tenantgate.identity.model import Identity
from tenantgate.testing.redis import RedisServer

MakeKeys = Callable[..., ApiKeys]


@pytest.fixture
async def make_keys(tmp_path: Path) -> AsyncIterator[MakeKeys]:
    made: list[ApiKeys] = []

    def make(redis_url: str, **api_keys: Any) -> ApiKeys:
        (tmp_path / "hash.key").write_text(secrets.token_hex(32))
        (tmp_path / "context.key").write_text(secrets.token_hex(32))
        config = parse_config(yaml.safe_dump({
            "context": {"active_key": "c1",
                        "keys": [{"id": "c1", "secret": {"fromFile": "context.key"}}]},
            "tenants": {"registry": {"acme": {}}},
            # Flushed by hand only: the background loop never runs in these tests.
            "api_keys": {"hash_secret": {"fromFile": "hash.key"}, "redis_url": redis_url,
                         "usage_flush_interval": "60s", **api_keys},
        }), base_dir=tmp_path)
        assert config.api_keys is not None
        keys = ApiKeys(config.api_keys, frozenset({"acme"}), audit=None)
        made.append(keys)
        return keys

    yield make
    for keys in made:
        await keys.close()


async def use_new_key(keys: ApiKeys, times: int) -> str:
    new = await KeyManager(keys, lambda t: True, lambda t: True).create("acme", "n", [], 0)
    for _ in range(times):
        assert isinstance(await keys.check(new.api_key), Identity)
    return new.record.key_id


def stored_usage(port: int) -> dict[str, int]:
    with redis.Redis(port=port) as client:
        raw = client.hgetall("tenantgate:apikeys:usage:acme")
    return {k.decode(): int(v) for k, v in raw.items()}


async def test_counts_are_written_once_when_the_redis_user_may_not_run_scripts(
        redis_server: RedisServer, redis_url: str, make_keys: MakeKeys) -> None:
    # A least-privilege user without EVAL: the last-used write is refused on every flush.
    with redis.Redis(port=redis_server.port) as admin:
        admin.acl_setuser("tg-noscript", enabled=True, passwords=["+pw"], keys=["~*"],
                          channels=["*"], commands=["+@all", "-@scripting"])
    keys = make_keys(f"redis://tg-noscript:pw@127.0.0.1:{redis_server.port}/0")
    key_id = await use_new_key(keys, times=5)
    for _ in range(4):  # each flush re-sent the counts Redis had applied: 5, 10, 15, 20
        await keys.flush_usage()
    assert stored_usage(redis_server.port) == {"requests": 5, f"key:{key_id}": 5}


async def test_a_count_redis_refused_is_sent_again_and_only_that_one(
        redis_server: RedisServer, redis_url: str, make_keys: MakeKeys) -> None:
    keys = make_keys(redis_url)
    key_id = await use_new_key(keys, times=3)
    with redis.Redis(port=redis_server.port) as admin:  # a field HINCRBY refuses to add to
        admin.hset("tenantgate:apikeys:usage:acme", f"key:{key_id}", "not a number")
    await keys.flush_usage()
    assert stored_usage_text(redis_server.port) == {"requests": "3",
                                                    f"key:{key_id}": "not a number"}
    with redis.Redis(port=redis_server.port) as admin:
        admin.hdel("tenantgate:apikeys:usage:acme", f"key:{key_id}")
    await keys.flush_usage()
    assert stored_usage(redis_server.port) == {"requests": 3, f"key:{key_id}": 3}


def stored_usage_text(port: int) -> dict[str, str]:
    with redis.Redis(port=port, decode_responses=True) as client:
        return client.hgetall("tenantgate:apikeys:usage:acme")


async def test_counts_made_while_redis_was_down_are_written_once_it_is_back(
        make_keys: MakeKeys) -> None:
    server = RedisServer().start()
    try:
        keys = make_keys(server.url)
        key_id = await use_new_key(keys, times=2)
        server.stop()
        # A pooled connection Redis dropped may have taken a write with it (that flush's counts
        # are dropped); a new connection refused has sent nothing, and loses nothing.
        await keys.store.client.connection_pool.disconnect()
        await keys.flush_usage()
        server.start()  # same port, empty
        await keys.flush_usage()
        await keys.flush_usage()
        assert stored_usage(server.port) == {"requests": 2, f"key:{key_id}": 2}
    finally:
        server.close()


class HeldReplies:
    """A TCP proxy in front of Redis that, while `hold` is set, forwards commands at once but
    keeps Redis's replies back: the write is applied, its reply never arrives in time."""

    def __init__(self, redis_port: int) -> None:
        self.redis_port = redis_port
        self.hold = False
        self.reply_held = asyncio.Event()  # Redis has answered a held write: it was applied
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
                      ) -> None:
        redis_r, redis_w = await asyncio.open_connection("127.0.0.1", self.redis_port)
        self._writers += [client_w, redis_w]
        for task in (self._pump(client_r, redis_w, replies=False),
                     self._pump(redis_r, client_w, replies=True)):
            started = asyncio.ensure_future(task)
            self._tasks.add(started)
            started.add_done_callback(self._tasks.discard)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    replies: bool) -> None:
        try:
            while data := await reader.read(65536):
                if replies and self.hold:
                    self.reply_held.set()
                    continue  # dropped: as far as the client knows, no reply came
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()


async def test_counts_whose_reply_came_too_late_are_not_sent_again(
        redis_server: RedisServer, redis_url: str, make_keys: MakeKeys) -> None:
    proxy = HeldReplies(redis_server.port)
    port = await proxy.start()
    try:
        # Not a short timeout: the setup's calls go through the proxy on this loop too, and a
        # held reply is never delivered, so the flush times out whatever the timeout is.
        keys = make_keys(f"redis://127.0.0.1:{port}/0", redis_timeout="2s")
        key_id = await use_new_key(keys, times=5)
        proxy.hold = True
        await keys.flush_usage()  # applied by Redis; the reply is lost: TimeoutError
        await asyncio.wait_for(proxy.reply_held.wait(), 30)  # the bound only breaks a hang
        assert stored_usage(redis_server.port) == {"requests": 5, f"key:{key_id}": 5}
        proxy.hold = False
        await keys.flush_usage()  # re-sent the same 5: 10
        assert stored_usage(redis_server.port) == {"requests": 5, f"key:{key_id}": 5}
    finally:
        await proxy.close()
