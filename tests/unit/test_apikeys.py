"""API keys without servers: the key format, equal work for unknown ids and wrong secrets,
the lookup cache, admin-token checks and config validation."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from redis.exceptions import ConnectionError as RedisConnectionError
from tenantgate.admin.server import AdminTokenAuth
from tenantgate.config.load import parse_config
from tenantgate.decision import Reason
from tenantgate.errors import ApiKeyStoreUnavailable, ConfigError
from tenantgate.identity import apikeys as apikeys_module
from tenantgate.identity.apikey_store import KeyRecord
from tenantgate.identity.apikeys import (
    ApiKeys,
    Hasher,
    KeyRefusal,
    format_key,
    new_secret,
    parse_key,
)
from tenantgate.identity.model import Identity
from tenantgate.observe import audit as audit_module
from tenantgate.observe.audit import AuditLog

KEY_ID = "0123456789abcdef"
SECRET = new_secret()


@pytest.mark.parametrize(("presented", "expected"), [
    pytest.param(format_key("tgk", KEY_ID, SECRET), (KEY_ID, SECRET), id="well-formed"),
    pytest.param(format_key("tgk", KEY_ID, "_" + SECRET[1:]), (KEY_ID, "_" + SECRET[1:]),
                 id="secret-starting-with-underscore"),
    pytest.param(format_key("abc", KEY_ID, SECRET), None, id="wrong-prefix"),
    pytest.param(format_key("tgkx", KEY_ID, SECRET), None, id="longer-prefix"),
    pytest.param(format_key("tgk", KEY_ID.upper(), SECRET), None, id="upper-case-id"),
    pytest.param(format_key("tgk", KEY_ID[:-1], SECRET), None, id="short-id"),
    pytest.param(format_key("tgk", KEY_ID, SECRET[:-1]), None, id="short-secret"),
    pytest.param(format_key("tgk", KEY_ID, SECRET + "A"), None, id="long-secret"),
    pytest.param(format_key("tgk", KEY_ID, SECRET[:-1] + "="), None, id="padding-in-secret"),
    pytest.param(format_key("tgk", KEY_ID, SECRET[:-1] + "\n"), None, id="newline"),
    pytest.param("tgk_" + KEY_ID, None, id="no-secret"),
    pytest.param("", None, id="empty"),
])
def test_parse_key_accepts_only_the_exact_format(presented: str, expected: object) -> None:
    assert parse_key("tgk", presented) == expected


class CountingHasher(Hasher):
    def __init__(self, secret: bytes) -> None:
        super().__init__(secret)
        self.calls: list[str] = []

    def digest(self, key_id: str, secret: str) -> str:
        self.calls.append("digest")
        return super().digest(key_id, secret)

    def matches(self, presented: str, stored: str) -> bool:
        self.calls.append("matches")
        return super().matches(presented, stored)


class FakeStore:
    def __init__(self, records: dict[str, KeyRecord]) -> None:
        self.records = records
        self.gets: list[str] = []

    async def get(self, key_id: str) -> KeyRecord | None:
        self.gets.append(key_id)
        return self.records.get(key_id)


def make_keys(tmp_path: Path, *, jitter: Callable[[], float] = random.random,
              sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
              **settings: Any) -> tuple[ApiKeys, CountingHasher, FakeStore]:
    """ApiKeys over a FakeStore; `settings`: more `api_keys` settings."""
    (tmp_path / "hash.key").write_text("h" * 40)
    (tmp_path / "c.key").write_text("c" * 40)
    config = parse_config(yaml.safe_dump({
        "context": {"active_key": "c1", "keys": [{"id": "c1", "secret": {"fromFile": "c.key"}}]},
        "api_keys": {"hash_secret": {"fromFile": "hash.key"}, "cache_ttl": "30s", **settings},
    }), base_dir=tmp_path)
    assert config.api_keys is not None
    keys = ApiKeys(config.api_keys, frozenset({"acme"}), audit=None, jitter=jitter, sleep=sleep)
    hasher = CountingHasher(config.api_keys.hash_secret.value)
    keys.hasher = hasher
    store = FakeStore({})
    keys.store = store  # type: ignore[assignment]
    return keys, hasher, store


async def verify(keys: ApiKeys, presented: str, request_id: str = "") -> Identity | Reason:
    """ApiKeys.check, the call a Check makes, with a refusal as its reason alone."""
    result = await keys.check(presented, request_id)
    return result.reason if isinstance(result, KeyRefusal) else result


def record(keys: ApiKeys, secret: str = SECRET, **changes: Any) -> KeyRecord:
    fields: dict[str, Any] = {"key_id": KEY_ID, "tenant": "acme", "name": "n",
                              "scopes": ("things:read",),
                              "digest": keys.hasher.digest(KEY_ID, secret),
                              "created_at": int(time.time())}
    fields.update(changes)
    return KeyRecord(**fields)


async def test_unknown_id_and_wrong_secret_do_the_same_work(tmp_path: Path) -> None:
    keys, hasher, store = make_keys(tmp_path)
    store.records[KEY_ID] = record(keys)
    hasher.calls.clear()
    unknown = await verify(keys, format_key("tgk", "fedcba9876543210", SECRET))
    work_unknown = (list(hasher.calls), len(store.gets))
    hasher.calls.clear()
    store.gets.clear()
    wrong = await verify(keys, format_key("tgk", KEY_ID, new_secret()))
    work_wrong = (list(hasher.calls), len(store.gets))
    assert unknown == wrong == Reason.API_KEY_INVALID
    assert work_unknown == work_wrong == (["digest", "matches"], 1)


async def test_malformed_key_still_hashes_and_compares_but_never_reaches_the_store(
        tmp_path: Path) -> None:
    keys, hasher, store = make_keys(tmp_path)
    hasher.calls.clear()
    assert await verify(keys, "x" * 500) == Reason.API_KEY_INVALID
    assert await verify(keys, format_key("abc", KEY_ID, SECRET)) == Reason.API_KEY_INVALID
    assert hasher.calls == ["digest", "matches"] * 2
    assert store.gets == []


async def test_revoked_and_expired_are_told_apart_only_to_the_secret_holder(
        tmp_path: Path) -> None:
    keys, _, store = make_keys(tmp_path)
    store.records[KEY_ID] = record(keys, revoked_at=int(time.time()))
    assert await verify(keys, format_key("tgk", KEY_ID, SECRET)) == Reason.API_KEY_REVOKED
    assert await verify(keys, format_key("tgk", KEY_ID, new_secret())) == Reason.API_KEY_INVALID
    keys.invalidate()
    store.records[KEY_ID] = record(keys, expires_at=int(time.time()) - 1)
    assert await verify(keys, format_key("tgk", KEY_ID, SECRET)) == Reason.API_KEY_EXPIRED
    assert await verify(keys, format_key("tgk", KEY_ID, new_secret())) == Reason.API_KEY_INVALID


async def test_a_revoked_keys_use_is_audited_under_the_rate_cap(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Whoever holds a leaked key that was later revoked may try it at will: each try writes
    # an audit line, so those lines count against the cap as Check lines do.
    monkeypatch.setattr(audit_module.time, "time", lambda: 1_800_000_000.5)  # one second
    keys, _, store = make_keys(tmp_path)
    log_file = tmp_path / "audit.log"
    keys._audit = AuditLog(str(log_file), sample_allow=0.0, max_lines_per_second=5)
    store.records[KEY_ID] = record(keys, revoked_at=1_799_999_000)
    for n in range(200):
        assert await verify(keys, format_key("tgk", KEY_ID, SECRET),
                            f"req-{n}") == Reason.API_KEY_REVOKED
    keys._audit.close()
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert [line["event"] for line in lines] == ["apikey_revoked_used"] * 5
    # The request id joins each line to the Check's own denial line.
    assert [line["request_id"] for line in lines] == [f"req-{n}" for n in range(5)]


async def test_valid_key_becomes_an_api_key_identity_with_the_records_tenant(
        tmp_path: Path) -> None:
    keys, _, store = make_keys(tmp_path)
    store.records[KEY_ID] = record(keys, expires_at=2_000_000_000)
    identity = await verify(keys, format_key("tgk", KEY_ID, SECRET))
    assert identity == Identity(issuer="api-key", subject=f"apikey:{KEY_ID}",
                                tenant_claim="acme", scopes=frozenset({"things:read"}),
                                roles=frozenset(), key_id=KEY_ID, expires_at=2_000_000_000.0)


class SteppedClock:
    """The time module as ApiKeys reads it: a wall clock that may be stepped back (NTP, an
    operator), and a monotonic one, here just after boot, that only moves forward."""

    def __init__(self) -> None:
        self.wall = 1_800_000_000.0
        self.elapsed = 5.0

    def time(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.elapsed


class UsageStore(FakeStore):
    def __init__(self, records: dict[str, KeyRecord]) -> None:
        super().__init__(records)
        self.last_used: list[dict[str, int]] = []

    async def add_usage(self, increments: Mapping[tuple[str, str], int],
                        last_used: Mapping[str, int]) -> dict[tuple[str, str], int]:
        self.last_used.append(dict(last_used))
        return {}


async def test_last_used_is_written_once_an_interval_whatever_the_wall_clock_does(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The interval between last-used writes was measured on the wall clock: stepped back an
    hour, it wrote nothing for that hour. On the monotonic clock, a key's first use is written
    even when that clock (time since boot) is younger than the interval."""
    clock = SteppedClock()
    monkeypatch.setattr(apikeys_module, "time", clock)
    keys, _, _ = make_keys(tmp_path)
    store = UsageStore({KEY_ID: record(keys)})
    keys.store = store  # type: ignore[assignment]
    presented = format_key(keys.prefix, KEY_ID, SECRET)
    for _ in range(2):
        assert isinstance(await verify(keys, presented), Identity)
        await keys.flush_usage()
        clock.wall -= 3600  # stepped back an hour
        clock.elapsed += 30  # half of last_used_interval: no write
        assert isinstance(await verify(keys, presented), Identity)
        await keys.flush_usage()
        clock.elapsed += 30
    assert store.last_used == [{KEY_ID: 1_800_000_000}, {},
                               {KEY_ID: 1_800_000_000 - 3600}, {}]


async def test_digest_of_one_key_does_not_verify_under_another_id(tmp_path: Path) -> None:
    keys, _, store = make_keys(tmp_path)
    other = "aaaaaaaaaaaaaaaa"
    # The other record carries the digest computed for KEY_ID: binding the id defeats the swap.
    store.records[other] = record(keys, key_id=other)
    assert await verify(keys, format_key("tgk", other, SECRET)) == Reason.API_KEY_INVALID


async def test_cache_serves_lookups_until_an_invalidation_arrives(tmp_path: Path) -> None:
    keys, _, store = make_keys(tmp_path)
    store.records[KEY_ID] = record(keys)
    key = format_key("tgk", KEY_ID, SECRET)
    assert isinstance(await verify(keys, key), Identity)
    store.records[KEY_ID] = record(keys, revoked_at=1)
    assert isinstance(await verify(keys, key), Identity)  # cached (TTL 30 s)
    assert store.gets == [KEY_ID]
    keys.invalidate(KEY_ID)  # what the pub/sub message does
    assert await verify(keys, key) == Reason.API_KEY_REVOKED
    assert store.gets == [KEY_ID, KEY_ID]


async def test_a_lookup_racing_an_invalidation_is_not_cached(tmp_path: Path) -> None:
    keys, _, store = make_keys(tmp_path)
    store.records[KEY_ID] = record(keys)

    async def slow_get(key_id: str) -> KeyRecord | None:
        result = store.records.get(key_id)
        keys.invalidate(key_id)  # a revocation lands while the read is in flight
        return result

    store.get = slow_get  # type: ignore[method-assign]
    await verify(keys, format_key("tgk", KEY_ID, SECRET))
    assert KEY_ID not in keys._cache


@pytest.mark.parametrize(("metadata", "allowed"), [
    pytest.param([("authorization", "Bearer " + "t" * 40)], True, id="right-token"),
    pytest.param([("authorization", "bearer " + "t" * 40)], True, id="scheme-any-case"),
    pytest.param([], False, id="none"),
    pytest.param([("authorization", "Bearer " + "t" * 39)], False, id="prefix-of-token"),
    pytest.param([("authorization", "Bearer " + "t" * 41)], False, id="token-plus-one"),
    pytest.param([("authorization", "Basic " + "t" * 40)], False, id="basic"),
    pytest.param([("authorization", "Bearer ")], False, id="empty"),
    pytest.param([("authorization", "Bearer " + "t" * 40)] * 2, False, id="twice"),
    pytest.param([("x-admin-token", "t" * 40)], False, id="other-header"),
])
def test_admin_token_must_match_exactly(metadata: list[tuple[str, str]], allowed: bool) -> None:
    assert AdminTokenAuth(b"t" * 40).authorized(metadata) is allowed


def config_issues(tmp_path: Path, **sections: Any) -> list[str]:
    (tmp_path / "c.key").write_text("c" * 40)
    (tmp_path / "short.key").write_text("short")
    (tmp_path / "long.key").write_text("l" * 40)
    (tmp_path / "spaced.key").write_text("l" * 20 + " " + "l" * 20)
    (tmp_path / "tab.key").write_text("l" * 20 + "\t" + "l" * 20)
    (tmp_path / "accented.key").write_text("l" * 40 + "\u00e9", encoding="utf-8")
    (tmp_path / "latin1.key").write_bytes(b"pass\xe9word")
    document = {"context": {"active_key": "c1",
                            "keys": [{"id": "c1", "secret": {"fromFile": "c.key"}}]}, **sections}
    try:
        parse_config(yaml.safe_dump(document), base_dir=tmp_path)
    except ConfigError as exc:
        return exc.issues
    return []


@pytest.mark.parametrize(("sections", "issue"), [
    pytest.param({"admin": {"listen": "127.0.0.1:9002"}}, "admin: give token "
                 "and/or tls.client_ca: the admin API is never open", id="admin-without-auth"),
    pytest.param({"admin": {"listen": "0.0.0.0:9002", "token": {"fromFile": "long.key"}}},
                 "admin: without tls, listen must be a loopback address or "
                 "unix:PATH", id="token-in-clear-off-loopback"),
    pytest.param({"admin": {"token": {"fromFile": "short.key"}}},
                 "admin.token: token must be at least 32 bytes", id="short-admin-token"),
    pytest.param({"api_keys": {"hash_secret": {"fromFile": "short.key"}}},
                 "api_keys.hash_secret: secret must be at least 32 bytes", id="short-hash-secret"),
    pytest.param({"api_keys": {"hash_secret": {"fromFile": "long.key"}, "prefix": "T_K"}},
                 "api_keys.prefix: String should match pattern '^[a-z][a-z0-9]{1,15}$'",
                 id="prefix-with-separator"),
    pytest.param({"api_keys": {"hash_secret": {"fromFile": "long.key"},
                               "redis_url": "http://x"}},
                 "api_keys.redis_url: must be a redis://, rediss:// or unix:// URL",
                 id="not-a-redis-url"),
    # RotateKey refuses overlaps over 10 years: a longer default was cut to 10 years unsaid.
    pytest.param({"api_keys": {"hash_secret": {"fromFile": "long.key"},
                               "rotate_overlap": "3651d"}},
                 "api_keys.rotate_overlap: Input should be less than or equal to 315360000",
                 id="rotate-overlap-over-ten-years"),
    # redis-py takes the password as text: serve ended in a UnicodeDecodeError traceback.
    pytest.param({"api_keys": {"hash_secret": {"fromFile": "long.key"},
                               "redis_password": {"fromFile": "latin1.key"}}},
                 "api_keys.redis_password: the password is not valid UTF-8",
                 id="redis-password-not-utf8"),
    # gRPC cannot send such a token (nor the CLI): the admin API would be locked for good.
    *[pytest.param({"admin": {"token": {"fromFile": name}}},
                   "admin.token: token must be printable ASCII without spaces (it goes in an "
                   "`authorization: Bearer` header)", id=f"admin-token-{name.split('.')[0]}")
      for name in ("spaced.key", "tab.key", "accented.key")],
    # gRPC reads ::1:9002 as one IPv6 address, port 443: serve failed to bind it, and a
    # token-only config passed as loopback.
    pytest.param({"admin": {"listen": "::1:9002", "token": {"fromFile": "long.key"}}},
                 "admin.listen: ::1:9002: an IPv6 address goes in brackets, e.g. [::1]:9002",
                 id="admin-listen-ipv6-unbracketed"),
    pytest.param({"admin": {"listen": "[127.0.0.1]:9002", "token": {"fromFile": "long.key"}}},
                 "admin.listen: [127.0.0.1]:9002: brackets hold an IPv6 address, e.g. "
                 "[::1]:9002", id="admin-listen-ipv4-in-brackets"),
    # gRPC binds unix://run/a.sock at /run/a.sock, not at a relative run/a.sock.
    pytest.param({"admin": {"listen": "unix://run/admin.sock",
                            "token": {"fromFile": "long.key"}}},
                 "admin.listen: unix://run/admin.sock: unix:// is followed by an absolute path "
                 "(unix:///abs/path); write unix:PATH for a path relative to the config file",
                 id="admin-listen-unix-double-slash-relative"),
    *[pytest.param({"admin": {"listen": listen, "token": {"fromFile": "long.key"}}},
                   f"admin.listen: /{'s' * 120} is 121 bytes: a Unix socket path holds at most "
                   "107 (sun_path); choose a shorter one", id=f"admin-listen-socket-too-long-{i}")
      for i, listen in enumerate((f"unix:/{'s' * 120}", f"unix:///{'s' * 120}"))],
])
def test_bad_api_key_and_admin_config_is_refused_with_its_key_path(
        tmp_path: Path, sections: dict[str, Any], issue: str) -> None:
    assert config_issues(tmp_path, **sections) == [issue]


@pytest.mark.parametrize("listen", ["[::1]:9002", "localhost:9002", "unix:///run/admin.sock",
                                    "unix:run/admin.sock"])
def test_admin_listen_forms_grpc_reads_as_meant_are_accepted(tmp_path: Path,
                                                              listen: str) -> None:
    assert config_issues(tmp_path, admin={"listen": listen, "token": {"fromFile": "long.key"}},
                         api_keys={"hash_secret": {"fromFile": "long.key"}}) == []


def test_api_keys_and_admin_are_off_unless_configured(tmp_path: Path) -> None:
    (tmp_path / "c.key").write_text("c" * 40)
    config = parse_config(yaml.safe_dump({"context": {
        "active_key": "c1", "keys": [{"id": "c1", "secret": {"fromFile": "c.key"}}]}}),
        base_dir=tmp_path)
    assert config.api_keys is None and config.admin is None


@pytest.mark.parametrize(("fields", "revoked", "expired"), [
    ({}, False, False),
    ({"revoked_at": "", "expires_at": "0"}, False, False),
    ({"revoked_at": "1700000100"}, True, False),
    ({"expires_at": "1700000100"}, False, True),
    # Written by hand in another format: a revocation must revoke, not read as "never".
    ({"revoked_at": "1700000100.25"}, True, False),
    ({"revoked_at": "true"}, True, False),
    ({"expires_at": "1700000100.0"}, False, True),
    ({"expires_at": "soon"}, False, True),
], ids=["absent", "empty-and-zero", "revoked", "expired", "revoked-float", "revoked-word",
        "expires-float", "expires-word"])
def test_a_stored_time_that_cannot_be_read_counts_as_past(
        fields: dict[str, str], revoked: bool, expired: bool) -> None:
    record = KeyRecord.from_hash("k1", {"tenant": "acme", "digest": "d", **fields})
    assert record is not None
    assert (record.revoked, record.expired(time.time())) == (revoked, expired)


class SlowStore(FakeStore):
    """A Redis slow in each step of a lookup on a new connection (connect, handshake, HGETALL),
    each within redis_timeout (250 ms by default), the whole well past it."""

    async def get(self, key_id: str) -> KeyRecord | None:
        for _ in range(3):
            await asyncio.sleep(0.2)
        return await super().get(key_id)


async def test_a_lookup_is_bounded_by_redis_timeout_in_all(tmp_path: Path) -> None:
    keys, _, _ = make_keys(tmp_path)
    slow = SlowStore({})
    slow.records[KEY_ID] = record(keys)
    keys.store = slow  # type: ignore[assignment]
    with pytest.raises(ApiKeyStoreUnavailable):  # fail closed (503), before Envoy gives up
        await verify(keys, format_key("tgk", KEY_ID, SECRET))


class Subscriptions:
    """Stands in for ApiKeys._listen: each attempt is refused, or goes live and is then lost,
    as `outcomes` says; the injected sleep records each wait and ends the loop after the last."""

    def __init__(self, outcomes: list[str], error: Exception) -> None:
        self.outcomes, self.error, self.waits = outcomes, error, list[float]()
        self.keys: ApiKeys | None = None

    async def listen(self) -> None:
        assert self.keys is not None
        if self.outcomes.pop(0) == "live":
            self.keys.subscribed.set()
        raise self.error

    async def sleep(self, seconds: float) -> None:
        assert self.keys is not None
        self.waits.append(seconds)
        self.keys._closing = not self.outcomes


async def subscription_waits(tmp_path: Path, outcomes: list[str], jitter: float) -> list[float]:
    subscriptions = Subscriptions(list(outcomes), RedisConnectionError("Connection refused"))
    keys, _, _ = make_keys(tmp_path, jitter=lambda: jitter, sleep=subscriptions.sleep)
    subscriptions.keys = keys
    keys._listen = subscriptions.listen  # type: ignore[method-assign]
    await keys._subscribe_forever()
    return subscriptions.waits


async def test_subscription_retries_are_jittered_so_replicas_do_not_return_together(
        tmp_path: Path) -> None:
    """After a Redis restart every replica lost its subscription at the same moment: the waits
    between attempts doubled from 0.5 s to 30 s on the same schedule everywhere, so they all
    subscribed again at the same moments. Each wait is now less a random part of up to half."""
    refused = ["refused"] * 8
    assert await subscription_waits(tmp_path, refused, 0.0) == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert await subscription_waits(tmp_path, refused, 0.5) == [
        0.375, 0.75, 1.5, 3, 6, 12, 22.5, 22.5]


async def test_a_live_subscription_lost_starts_the_waits_over(tmp_path: Path) -> None:
    outcomes = ["refused", "refused", "refused", "live", "refused"]
    assert await subscription_waits(tmp_path, outcomes, 0.0) == [0.5, 1, 2, 0.5, 1]


PASSWORD = "s3cret/pa+ss"  # as the URL writes it: %2F and %2B


class FailingStore(FakeStore):
    def __init__(self, error: Exception) -> None:
        super().__init__({})
        self.error = error

    async def get(self, key_id: str) -> KeyRecord | None:
        raise self.error


@pytest.mark.parametrize(("settings", "written"), [
    pytest.param({"redis_url": "redis://tg:s3cret%2Fpa%2Bss@127.0.0.1:1/0"}, "s3cret%2Fpa%2Bss",
                 id="url-userinfo"),
    pytest.param({"redis_url": "redis://127.0.0.1:1/0?password=s3cret%2Fpa%2Bss"},
                 "s3cret%2Fpa%2Bss", id="url-query"),
    pytest.param({"redis_password": {"fromFile": "redis.pass"}}, PASSWORD, id="redis_password"),
])
async def test_a_store_failure_is_said_in_one_line_with_the_redis_password_masked(
        tmp_path: Path, settings: dict[str, Any], written: str,
        caplog: pytest.LogCaptureFixture) -> None:
    """describe_store_error masked nothing: a message that ever held the API-key store's
    password (the URL's or redis_password) wrote it to the log."""
    (tmp_path / "redis.pass").write_text(PASSWORD)
    error = RedisConnectionError(f"AUTH {PASSWORD} refused\nby {written}")
    subscriptions = Subscriptions(["refused"], error)
    keys, _, _ = make_keys(tmp_path, sleep=subscriptions.sleep, **settings)
    keys.store = FailingStore(error)  # type: ignore[assignment]
    with pytest.raises(ApiKeyStoreUnavailable):
        await verify(keys, format_key("tgk", KEY_ID, SECRET))
    subscriptions.keys = keys
    keys._listen = subscriptions.listen  # type: ignore[method-assign]
    await keys._subscribe_forever()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        "API-key store unavailable (Checks with API keys fail closed with 503): "
        "ConnectionError: AUTH *** refused by ***",
        "API-key revocation channel 'tenantgate:apikeys:revoked' unavailable (revocations reach "
        "this replica only after cache_ttl; subscribing again with backoff): "
        "ConnectionError: AUTH *** refused by ***"]
