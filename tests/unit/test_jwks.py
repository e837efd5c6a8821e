"""An issuer's JWKS: Cache-Control within bounds, the unknown-kid refetch bound, stale-if-error
up to max_stale, rotation, and which keys may verify which algorithm. HTTP is httpx's mock
transport and time is a fake clock, so every bound is checked exactly."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from prometheus_client import REGISTRY
from tenantgate.config.model import IssuerConfig
from tenantgate.decision import Reason
from tenantgate.errors import KeySetUnavailable
from tenantgate.identity import jwks as jwks_module
from tenantgate.identity.jwks import FAILED_FETCH_BACKOFF, FetchFailed, KeySet
from tenantgate.identity.jwt import JwtVerifier
from tenantgate.identity.keys import fits, prepare
from tenantgate.identity.model import NOT_A_STRING, Identity
from tenantgate.identity.rejected_tokens import RejectedTokens
from tenantgate.identity.token_cache import TokenCache, token_key
from tenantgate.testing import tokens
from tenantgate.testing.check import DevIssuer

URL = "https://idp.test/jwks.json"


@pytest.fixture(scope="module")
def idp() -> DevIssuer:
    issuer = DevIssuer(issuer="https://idp.test", kid="k1")
    issuer.add_key("k2")
    return issuer


class FakeIdP:
    """The JWKS endpoint: what it serves, whether it fails, how often it was asked."""

    def __init__(self, keys: list[dict[str, Any]], cache_control: str | None = None) -> None:
        self.keys = keys
        self.cache_control = cache_control
        self.failing = False
        self.fetches = 0
        self.gate: asyncio.Event | None = None  # when set, answers wait for it

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.fetches += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.failing:
            return httpx.Response(503)
        headers = {"cache-control": self.cache_control} if self.cache_control else {}
        return httpx.Response(200, json={"keys": self.keys}, headers=headers)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def no_jitter() -> float:
    return 0.0  # backoffs of exactly 1, 2, 4, ... seconds (the top of each range)


def keyset(fake: FakeIdP, clock: Clock, **jwks: Any) -> KeySet:
    cfg = IssuerConfig.model_validate({
        "name": "idp", "issuer": "https://idp.test", "audiences": ["api"],
        "tenant_pattern": "^[a-z]+$",
        "jwks": {"url": URL, "min_ttl": "60s", "max_ttl": "1h", "default_ttl": "300s",
                 "refetch_interval": "30s", "max_stale": "600s", **jwks}})
    client = httpx.AsyncClient(transport=httpx.MockTransport(fake.handle))
    return KeySet(cfg, client, clock=clock, jitter=no_jitter)


async def settle() -> None:
    for _ in range(5):  # let background refreshes run to completion
        await asyncio.sleep(0)


@pytest.mark.parametrize("cache_control, fresh_for", [
    ("max-age=120", 120), ("public, max-age=5", 60), ("max-age=999999", 3600),
    ("no-store", 60), ("no-cache, max-age=500", 60), ("s-maxage=900", 300), (None, 300),
    ("x-no-cache-hint, max-age=600", 600), ("max-age=600, no-store-x", 600),
    ("public, max-age=600, NO-CACHE", 60), ('max-age=600, no-cache="set-cookie"', 60),
    ("max-age=600,  No-Store ", 60),
], ids=["within-bounds", "below-min", "above-max", "no-store", "no-cache", "s-maxage-only",
        "absent", "extension-naming-no-cache", "extension-naming-no-store", "no-cache-upper",
        "no-cache-with-value", "no-store-spaced"])
async def test_cache_control_is_honoured_within_min_and_max(
        idp: DevIssuer, cache_control: str | None, fresh_for: float) -> None:
    fake, clock = FakeIdP(idp.jwks(["k1"]), cache_control), Clock()
    keys = keyset(fake, clock)
    await keys.start()
    clock.now += fresh_for - 0.5
    assert await keys.find("k1", "RS256") != []
    await settle()
    assert fake.fetches == 1, "refreshed before the key set went stale"
    clock.now += 1
    assert await keys.find("k1", "RS256") != []
    await settle()
    assert fake.fetches == 2, "not refreshed once stale"


async def test_stale_keys_are_served_while_the_refresh_runs_in_the_background(
        idp: DevIssuer) -> None:
    fake, clock = FakeIdP(idp.jwks(["k1"]), "max-age=60"), Clock()
    keys = keyset(fake, clock)
    await keys.start()
    fake.gate = asyncio.Event()  # the IdP now hangs
    clock.now += 61
    found = await asyncio.wait_for(keys.find("k1", "RS256"), timeout=1)
    assert found != [] and fake.fetches == 2  # a refresh started, nobody waited for it
    fake.gate.set()
    await keys.close()


async def test_flood_of_unknown_kids_fetches_at_most_once_per_interval(idp: DevIssuer) -> None:
    fake, clock = FakeIdP(idp.jwks(["k1"]), "max-age=3600"), Clock()
    keys = keyset(fake, clock)
    await keys.start()
    for n in range(500):
        assert await keys.find(f"random-{n}", "RS256") == []
    assert fake.fetches == 2  # start-up + one refetch
    clock.now += 29.9
    assert await keys.find("random-x", "RS256") == []
    assert fake.fetches == 2
    clock.now += 0.2
    assert await keys.find("random-y", "RS256") == []
    assert fake.fetches == 3


async def test_concurrent_unknown_kids_share_one_fetch(idp: DevIssuer) -> None:
    fake, clock = FakeIdP(idp.jwks(["k1"]), "max-age=3600"), Clock()
    keys = keyset(fake, clock)
    fake.keys = []
    await keys.start()
    fake.keys = idp.jwks(["k1"])
    results = await asyncio.gather(*(keys.find("k1", "RS256") for _ in range(50)))
    assert fake.fetches == 2 and results[0] != []


async def test_rotation_new_key_found_by_refetch_old_key_gone_after_refresh(
        idp: DevIssuer) -> None:
    fake, clock = FakeIdP(idp.jwks(["k1"]), "max-age=60"), Clock()
    keys = keyset(fake, clock)
    await keys.start()
    fake.keys = idp.jwks(["k1", "k2"])
    assert await keys.find("k2", "RS256") != []  # unknown kid: refetched at once
    fake.keys = idp.jwks(["k2"])
    clock.now += 61
    await keys.find("k2", "RS256")  # stale: background refresh
    await settle()
    assert await keys.find("k1", "RS256") == []


async def test_endpoint_down_known_keys_work_up_to_max_stale_then_unavailable(
        idp: DevIssuer) -> None:
    fake, clock = FakeIdP(idp.jwks(["k1"]), "max-age=60"), Clock()
    keys = keyset(fake, clock)
    await keys.start()
    fake.failing = True
    clock.now += 60 + 599
    assert await keys.find("k1", "RS256") != []
    await settle()
    assert await keys.find("k2", "RS256") == []  # unknown kid: refetch fails, denied
    clock.now += 1.5  # past fresh (60) + max_stale (600)
    with pytest.raises(KeySetUnavailable):
        await keys.find("k1", "RS256")
    fetches = fake.fetches
    for _ in range(100):  # backing off: a dead IdP is not hammered by every request
        with pytest.raises(KeySetUnavailable):
            await keys.find("k1", "RS256")
    assert fake.fetches == fetches
    fake.failing = False
    clock.now += 2 * FAILED_FETCH_BACKOFF  # the wait after two failures in a row (at 659)
    assert await keys.find("k1", "RS256") != []


async def test_past_max_stale_cached_tokens_lose_their_keys_too(
        idp: DevIssuer, monkeypatch: pytest.MonkeyPatch) -> None:
    # find() refuses new tokens past max_stale, but cached tokens never call it: the refresh
    # loop's failed fetch moves the generation, so the token cache sends them back too. No
    # backoff here (the loop sleeps in real time): ..._at_the_deadline_not_a_backoff_later
    # checks the same with the real backoff on a fake clock.
    monkeypatch.setattr("tenantgate.identity.jwks.MIN_REFRESH_WAIT", 0.001)
    monkeypatch.setattr("tenantgate.identity.jwks.FAILED_FETCH_BACKOFF", 0.0)
    fake, clock = FakeIdP(idp.jwks(["k1"]), "max-age=60"), Clock()
    keys = keyset(fake, clock)
    await keys.start()
    cache = TokenCache(max_entries=10, max_bytes=1 << 20)
    identity = Identity(issuer="idp", subject="alice", tenant_claim="acme",
                        scopes=frozenset(), roles=frozenset(), key_id="k1",
                        expires_at=time.time() + 86400)
    cache.put(b"token", identity, time.time(), keys)
    fake.failing = True
    clock.now += 60 + 599  # stale, still usable: the failing refreshes change nothing
    for _ in range(50):
        await asyncio.sleep(0.001)
    assert fake.fetches > 2 and keys.generation == 0
    assert cache.get(b"token", time.time()) is identity
    clock.now += 2  # past fresh (60) + max_stale (600)
    for _ in range(1000):
        if keys.generation:
            break
        await asyncio.sleep(0.001)
    assert keys.generation == 1
    assert cache.get(b"token", time.time()) is None
    for _ in range(50):  # still failing: moved once, not on every failed fetch
        await asyncio.sleep(0.001)
    assert keys.generation == 1
    fake.failing = False
    await keys.refresh()
    assert await keys.find("k1", "RS256") != []  # back: the same keys are trusted again
    await keys.close()


class SleepingClock(Clock):
    """A fake clock whose sleeps (the refresh loop's) end when advance() reaches their end."""

    def __init__(self) -> None:
        super().__init__()
        self.sleeps: list[float] = []
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        woken = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.now + seconds, woken))
        await woken

    async def advance(self, seconds: float) -> None:
        self.now += seconds
        for end, woken in self._sleepers:
            if end <= self.now and not woken.done():
                woken.set_result(None)
        self._sleepers = [(end, woken) for end, woken in self._sleepers if not woken.done()]
        for _ in range(20):  # the loop's fetch through the mock transport, to its end
            await asyncio.sleep(0)


def cached_token(keys: KeySet) -> TokenCache:
    cache = TokenCache(max_entries=10, max_bytes=1 << 20)
    identity = Identity(issuer="idp", subject="alice", tenant_claim="acme",
                        scopes=frozenset(), roles=frozenset(), key_id="k1",
                        expires_at=time.time() + 86400)
    cache.put(b"token", identity, time.time(), keys)
    return cache


async def test_past_max_stale_cached_tokens_are_refused_at_the_deadline_not_a_backoff_later(
        idp: DevIssuer) -> None:
    """The refresh loop slept until the next attempt (the backoff, up to 60 s), and only a
    failed fetch past max_stale moved the generation: cached tokens were accepted up to one
    backoff past the deadline (here 3 s: fetches at 1603 and 1663, deadline 1660)."""
    fake, clock = FakeIdP(idp.jwks(["k1"]), "max-age=60"), SleepingClock()
    cfg = keyset(fake, clock, refetch_interval="5m")._issuer  # backoff capped at 60 s
    client = httpx.AsyncClient(transport=httpx.MockTransport(fake.handle))
    keys = KeySet(cfg, client, clock=clock, jitter=no_jitter, sleep=clock.sleep)
    await keys.start()
    cache = cached_token(keys)
    fake.failing = True
    deadline = clock.now + 60 + 600  # fresh (60) + max_stale (600)
    while clock.now < deadline + 120:
        await clock.advance(0.5)
        accepted = cache.get(b"token", time.time()) is not None
        assert accepted == (clock.now < deadline), clock.now - deadline
    assert keys.generation == 1  # moved once, not on every failed fetch after
    assert fake.fetches < 20  # still backing off: 1 + fetches 1, 2, 4, ... 60 s apart
    assert min(clock.sleeps) >= jwks_module.MIN_REFRESH_WAIT  # the loop never spins
    fake.failing = False
    await clock.advance(60)
    assert await keys.find("k1", "RS256") != []  # back: the same keys are trusted again
    await keys.close()


async def test_keys_refreshed_in_time_keep_cached_tokens_even_with_max_stale_zero(
        idp: DevIssuer) -> None:
    # With max_stale 0 the deadline is the end of the TTL, when the loop refreshes: a
    # successful refresh must not count as a missed deadline and drop every cached token.
    fake, clock = FakeIdP(idp.jwks(["k1"]), "max-age=60"), SleepingClock()
    cfg = keyset(fake, clock, max_stale="0s")._issuer
    client = httpx.AsyncClient(transport=httpx.MockTransport(fake.handle))
    keys = KeySet(cfg, client, clock=clock, jitter=no_jitter, sleep=clock.sleep)
    await keys.start()
    cache = cached_token(keys)
    for _ in range(10 * 60):
        await clock.advance(0.5)
        assert cache.get(b"token", time.time()) is not None, clock.now
    assert keys.generation == 0 and fake.fetches == 1 + 5
    await keys.close()


async def test_failing_background_refresh_backs_off_instead_of_refetching_per_request(
        idp: DevIssuer) -> None:
    fake, clock = FakeIdP(idp.jwks(["k1"]), "max-age=60"), Clock()
    keys = keyset(fake, clock)
    await keys.start()
    fake.failing = True
    clock.now += 61  # stale but usable: known keys keep serving while the refresh fails
    for _ in range(100):
        assert await keys.find("k1", "RS256") != []
        await settle()
    assert fake.fetches == 2  # start-up + one failed refresh, not one per request
    fake.failing = False
    clock.now += FAILED_FETCH_BACKOFF
    assert await keys.find("k1", "RS256") != []
    await settle()
    assert fake.fetches == 3


def failed_fetch_waits(count: int, jitter: float, refetch_interval: str = "1h") -> list[float]:
    """The waits a KeySet sets after `count` failed fetches in a row, every jitter draw `jitter`."""
    cfg = IssuerConfig.model_validate({
        "name": "idp", "issuer": "https://idp.test", "audiences": ["api"],
        "tenant_pattern": "^[a-z]+$", "jwks": {"url": URL, "refetch_interval": refetch_interval}})
    keys = KeySet(cfg, None, jitter=lambda: jitter)
    return [keys._backoff.next_delay() for _ in range(count)]


def test_failed_fetch_backoff_doubles_up_to_its_cap_less_up_to_half_of_jitter() -> None:
    # The schedule docs/configuration.md gives (jwks.max_stale).
    assert failed_fetch_waits(9, 0.0) == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    # Jitter takes up to half off, never below the first step: replicas spread out.
    assert failed_fetch_waits(5, 0.5)[4] == 12
    assert failed_fetch_waits(5, 0.999)[4] == pytest.approx(8, abs=0.01)
    assert failed_fetch_waits(2, 0.999) == [1, pytest.approx(1, abs=0.01)]
    # No longer than refetch_interval: tokens of an issuer without usable keys wait for it.
    assert failed_fetch_waits(9, 0.0, "10s")[3:] == [8, 10, 10, 10, 10, 10]
    assert failed_fetch_waits(9, 0.0, "1s")[8] == 1


async def test_a_jwks_endpoint_that_stays_down_is_asked_ever_less_often(idp: DevIssuer) -> None:
    """A failed fetch was retried one second later, forever: every replica asked an IdP that
    was down once a second per issuer. Now the wait doubles up to refetch_interval (30 s here),
    and a success starts it over."""
    fake, clock = FakeIdP(idp.jwks(["k1"]), "max-age=60"), Clock()
    fake.failing = True
    cfg = keyset(fake, clock)._issuer
    client = httpx.AsyncClient(transport=httpx.MockTransport(fake.handle))
    keys = KeySet(cfg, client, clock=clock, jitter=no_jitter)

    async def waits(count: int) -> list[float]:
        """The seconds between fetches a Check with no usable keys asks for."""
        found = []
        for _ in range(count):
            fetches, started = fake.fetches, clock.now
            while True:
                with contextlib.suppress(KeySetUnavailable):
                    await keys.find("k1", "RS256")
                if fake.fetches != fetches:
                    break
                clock.now += 0.25
            found.append(clock.now - started)
        return found

    with pytest.raises(KeySetUnavailable):
        await keys.find("k1", "RS256")  # the first failure
    assert await waits(7) == [1, 2, 4, 8, 16, 30, 30]
    fake.failing = False
    assert await waits(1) == [30]
    assert await keys.find("k1", "RS256") != []
    fake.failing = True
    clock.now += 60 + 600  # past max_stale again: the backoff starts over
    with pytest.raises(KeySetUnavailable):
        await keys.find("k1", "RS256")
    assert await waits(3) == [1, 2, 4]
    await keys.close()


async def test_no_keys_at_start_is_unavailable_not_a_crash(idp: DevIssuer) -> None:
    fake, clock = FakeIdP(idp.jwks(["k1"])), Clock()
    fake.failing = True
    keys = keyset(fake, clock)
    await keys.start()  # not fatal
    with pytest.raises(KeySetUnavailable):
        await keys.find("k1", "RS256")


@pytest.mark.parametrize("body", [b"not json", b"[1,2]", b'{"keys": "nope"}', b"{}",
                                  b"[" * 200_000, b'{"keys":' + b"[" * 200_000],
                         ids=["not-json", "array", "keys-not-a-list", "no-keys",
                              "deeply-nested", "deeply-nested-keys"])
async def test_malformed_jwks_documents_are_fetch_failures(body: bytes) -> None:
    async def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body)

    cfg = IssuerConfig.model_validate({
        "name": "idp", "issuer": "https://idp.test", "audiences": ["api"],
        "tenant_pattern": "^[a-z]+$", "jwks": {"url": URL}})
    keys = KeySet(cfg, httpx.AsyncClient(transport=httpx.MockTransport(handle)))
    await keys.start()  # a bad document at start-up degrades, it does not abort
    with pytest.raises(KeySetUnavailable):
        await keys.find("k1", "RS256")


@pytest.mark.parametrize("content", [
    "not json", "[" * 200_000, "[]", "{}", '{"keys": {}}',
    '{"kty": "RSA", "kid": "k1", "n": "AQAB", "e": "AQAB"}',
], ids=["not-json", "deeply-nested", "not-an-object", "empty-object", "keys-not-a-list",
        "a-single-jwk"])
async def test_bad_jwks_file_is_unavailable_not_a_crash(tmp_path: Path, content: str) -> None:
    (tmp_path / "jwks.json").write_text(content)
    cfg = IssuerConfig.model_validate({
        "name": "idp", "issuer": "https://idp.test", "audiences": ["api"],
        "tenant_pattern": "^[a-z]+$", "jwks": {"file": str(tmp_path / "jwks.json")}})
    keys = KeySet(cfg, None)
    await keys.start()
    with pytest.raises(KeySetUnavailable):
        await keys.find("k1", "RS256")


def _swap_in_fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def _swap_in_dev_zero(path: Path) -> None:
    path.unlink()
    path.symlink_to("/dev/zero")


def _swap_in_oversized(path: Path) -> None:
    # Valid JSON, the whitespace taking it one byte over the bound.
    text = path.read_text()
    path.write_text(text + " " * (jwks_module.MAX_JWKS_BYTES - len(text.encode()) + 1))


@pytest.mark.parametrize(("swap", "why"), [
    (_swap_in_fifo, "{path} is not a regular file"),
    (_swap_in_dev_zero, "{path} is not a regular file"),
    (_swap_in_oversized,
     f"{{path}} is larger than {jwks_module.MAX_JWKS_BYTES // 1024} KiB: not a JWKS document"),
], ids=["fifo", "dev-zero", "oversized"])
async def test_a_jwks_file_swapped_for_an_endless_one_fails_the_fetch_keeping_the_keys(
        idp: DevIssuer, tmp_path: Path, swap: Callable[[Path], None], why: str) -> None:
    # The file was read whole on every refresh: /dev/zero or a huge file filled memory, a
    # FIFO with no writer blocked the refresh for good.
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": idp.jwks(["k1"])}))
    cfg = IssuerConfig.model_validate({
        "name": "idp", "issuer": "https://idp.test", "audiences": ["api"],
        "tenant_pattern": "^[a-z]+$", "jwks": {"file": str(path)}})
    keys = KeySet(cfg, None)
    await keys.start()
    swap(path)
    try:
        with pytest.raises(FetchFailed) as failed:
            await asyncio.wait_for(keys.refresh(), timeout=5)
        # In check-config's words (config.files.read_jwks_file reads for both).
        assert str(failed.value) == why.format(path=path)
        assert [key.key_id for key in await keys.find("k1", "RS256")] == ["k1"]  # stale keys serve
    finally:
        await keys.close()
        if path.is_fifo():  # the old code's open waits for a writer: let it end
            with contextlib.suppress(OSError):
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))


async def test_a_jwks_file_rewritten_without_a_keys_list_keeps_the_keys(
        idp: DevIssuer, tmp_path: Path) -> None:
    # `{}` emptied the key set (and with it every cached token), as if the IdP had withdrawn
    # every key; a URL answering the same is refused and the keys kept.
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": idp.jwks(["k1"])}))
    cfg = IssuerConfig.model_validate({
        "name": "idp", "issuer": "https://idp.test", "audiences": ["api"],
        "tenant_pattern": "^[a-z]+$", "jwks": {"file": str(path)}})
    keys = KeySet(cfg, None)
    await keys.refresh()
    path.write_text("{}")
    with pytest.raises(FetchFailed, match="not a JWKS document"):
        await keys.refresh()
    assert [key.key_id for key in await keys.find("k1", "RS256")] == ["k1"]


async def test_an_unknown_kid_reads_the_jwks_file_again(tmp_path: Path) -> None:
    # Rotation adds a key to a mounted file (a ConfigMap, a sidecar): its tokens were refused
    # as unknown_key until the next scheduled read, default_ttl later.
    issuer = DevIssuer(issuer="https://idp.test", kid="k1")
    issuer.add_key("k2")
    issuer.add_key("k3")
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": issuer.jwks(["k1"])}))
    cfg = IssuerConfig.model_validate({
        "name": "idp", "issuer": "https://idp.test", "audiences": ["api"],
        "tenant_pattern": "^[a-z]+$", "jwks": {"file": str(path), "refetch_interval": "30s"}})
    clock = Clock()
    keys = KeySet(cfg, None, clock=clock, jitter=no_jitter)
    await keys.refresh()
    path.write_text(json.dumps({"keys": issuer.jwks(["k1", "k2"])}))
    assert [key.key_id for key in await keys.find("k2", "RS256")] == ["k2"]
    path.write_text(json.dumps({"keys": issuer.jwks(["k1", "k2", "k3"])}))
    assert await keys.find("k3", "RS256") == []  # within refetch_interval: not read again
    clock.now += 30
    assert [key.key_id for key in await keys.find("k3", "RS256")] == ["k3"]


async def test_inline_keys_are_never_refetched(idp: DevIssuer) -> None:
    cfg = IssuerConfig.model_validate({
        "name": "idp", "issuer": "https://idp.test", "audiences": ["api"],
        "tenant_pattern": "^[a-z]+$", "jwks": {"inline": {"keys": idp.jwks(["k1"])}}})
    keys = KeySet(cfg, None)
    await keys.refresh()
    assert await keys.refetched("k2", "RS256") == []


async def test_a_jwks_file_at_the_size_bound_is_read(idp: DevIssuer, tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    text = json.dumps({"keys": idp.jwks(["k1"])})
    path.write_text(text + " " * (jwks_module.MAX_JWKS_BYTES - len(text.encode())))
    cfg = IssuerConfig.model_validate({
        "name": "idp", "issuer": "https://idp.test", "audiences": ["api"],
        "tenant_pattern": "^[a-z]+$", "jwks": {"file": str(path)}})
    keys = KeySet(cfg, None)
    await keys.refresh()
    assert [key.key_id for key in await keys.find("k1", "RS256")] == ["k1"]


async def test_a_failing_fetch_says_why_once_a_minute(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Only the max_stale warning spoke, long after, and never named the file or the error.
    missing = tmp_path / "jwks.jsn"
    cfg = IssuerConfig.model_validate({
        "name": "idp", "issuer": "https://idp.test", "audiences": ["api"],
        "tenant_pattern": "^[a-z]+$", "jwks": {"file": str(missing)}})
    keys = KeySet(cfg, None)
    with caplog.at_level(logging.WARNING, logger="tenantgate"):
        await keys.start()
        for _ in range(3):
            with pytest.raises(KeySetUnavailable):
                await keys.find("k1", "RS256")
    said = [r.getMessage() for r in caplog.records if "could not be fetched" in r.getMessage()]
    assert len(said) == 1
    assert f"JWKS of idp could not be fetched: cannot read {missing}" in said[0]


def _jwk(idp: DevIssuer, **changes: Any) -> dict[str, Any]:
    jwk = dict(idp.jwks(["k1"])[0])
    for name, value in changes.items():
        if value is None:
            jwk.pop(name, None)
        else:
            jwk[name] = value
    return jwk


@pytest.mark.parametrize("changes, algorithm, usable", [
    ({}, "RS256", True),
    ({"alg": None}, "RS256", True),
    ({"alg": None}, "PS256", True),
    ({"alg": "RS512"}, "RS256", False),
    ({"use": "enc"}, "RS256", False),
    ({"use": None}, "RS256", True),
    ({"key_ops": ["encrypt"]}, "RS256", False),
    ({"key_ops": ["verify"]}, "RS256", True),
    ({"key_ops": 5}, "RS256", False),
    ({"key_ops": "verify"}, "RS256", False),
    ({"d": "private-part"}, "RS256", False),
    ({}, "ES256", False),
    ({"kty": "EC", "crv": "P-256", "alg": None}, "RS256", False),
    ({}, "HS256", False),
], ids=["alg-matches", "no-alg-rs", "no-alg-ps", "alg-differs", "use-enc", "no-use",
        "ops-without-verify", "ops-verify", "ops-a-number", "ops-a-string", "private-key",
        "rsa-for-es256", "ec-for-rs256",
        "rsa-for-hs256"])
def test_only_keys_whose_kty_alg_and_use_fit_are_used(
        idp: DevIssuer, changes: dict[str, Any], algorithm: str, usable: bool) -> None:
    jwk = _jwk(idp, **changes)
    assert fits(jwk, algorithm) is usable


def test_prepare_skips_unfit_and_broken_keys(idp: DevIssuer) -> None:
    document = {"keys": [_jwk(idp), _jwk(idp, use="enc", kid="enc"), "garbage",
                         {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
                         json.loads(json.dumps(_jwk(idp, kid="twin")))]}
    prepared, skipped = prepare(document, ["RS256", "ES256"])
    assert sorted(k.key_id or "" for k in prepared) == ["k1", "twin"]
    assert all(k.algorithm == "RS256" for k in prepared)
    assert skipped == 2  # the enc key and the non-object; "broken" fits but fails to load


def test_rsa_keys_under_2048_bits_are_skipped() -> None:
    weak = tokens.public_jwk(rsa.generate_private_key(65537, 1024), "weak", "RS256")
    strong = tokens.public_jwk(rsa.generate_private_key(65537, 2048), "strong", "RS256")
    prepared, skipped = prepare({"keys": [weak, strong]}, ["RS256", "PS256"])
    assert sorted({k.key_id or "" for k in prepared}) == ["strong"]
    assert skipped == 1


def discovery_keyset(document: object, idp: DevIssuer,
                     issuer: str = "https://idp.test") -> tuple[KeySet, list[str]]:
    asked: list[str] = []

    async def handle(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        if request.url.path == "/.well-known/openid-configuration":
            return httpx.Response(200, json=document)
        return httpx.Response(200, json={"keys": idp.jwks(["k1"])})

    cfg = IssuerConfig.model_validate({
        "name": "idp", "issuer": "https://idp.test", "audiences": ["api"],
        "tenant_pattern": "^[a-z]+$", "jwks": {"discovery": True}})
    # Unvalidated: config load refuses discovery from a plain-http issuer (tests/fixtures/
    # config/jwks_discovery_not_https.yaml); the key set must refuse it on its own as well.
    cfg = cfg.model_copy(update={"issuer": issuer})
    return KeySet(cfg, httpx.AsyncClient(transport=httpx.MockTransport(handle))), asked


async def test_discovery_finds_the_jwks_uri(idp: DevIssuer) -> None:
    keys, asked = discovery_keyset({"issuer": "https://idp.test", "jwks_uri": URL}, idp)
    await keys.start()
    assert await keys.find("k1", "RS256") != []
    assert asked == ["/.well-known/openid-configuration", "/jwks.json"]


@pytest.mark.parametrize("document", [
    {"issuer": "https://evil.test", "jwks_uri": URL},
    {"jwks_uri": URL},
    {"issuer": "https://idp.test", "jwks_uri": "http://idp.test/jwks.json"},
    {"issuer": "https://idp.test"},
    ["not", "an", "object"],
    {"issuer": "https://idp.test", "jwks_uri": "https://[::1/jwks.json"},
    # httpx raises UnicodeEncodeError / an IDNA error for these before sending: they once
    # escaped the fetch and stopped the whole gateway's start.
    {"issuer": "https://idp.test", "jwks_uri": "https://idp.test/jwks\ud800.json"},
    {"issuer": "https://idp.test", "jwks_uri": "https://xn--a.example/jwks.json"},
], ids=["another-issuer", "no-issuer", "plain-http-jwks-uri", "no-jwks-uri", "array",
        "jwks-uri-not-a-url", "jwks-uri-lone-surrogate", "jwks-uri-bad-idna"])
async def test_discovery_document_that_does_not_fit_is_refused(idp: DevIssuer,
                                                               document: object) -> None:
    keys, asked = discovery_keyset(document, idp)
    await keys.start()
    with pytest.raises(KeySetUnavailable):
        await keys.find("k1", "RS256")
    assert "/jwks.json" not in asked


async def test_discovery_over_plain_http_is_refused_without_allow_insecure_http(
        idp: DevIssuer) -> None:
    # A network attacker answering the plain-http discovery request names the issuer as
    # asked and an https jwks_uri of their own: their keys would be trusted.
    keys, asked = discovery_keyset(
        {"issuer": "http://idp.test", "jwks_uri": "https://attacker.test/jwks.json"}, idp,
        issuer="http://idp.test")
    await keys.start()
    with pytest.raises(KeySetUnavailable):
        await keys.find("k1", "RS256")
    assert asked == []


async def test_an_etag_httpx_cannot_send_back_is_not_kept(idp: DevIssuer) -> None:
    """Sent back in If-None-Match, a non-ASCII ETag made every later fetch raise: no backoff,
    no max_stale clock, an error per Check."""
    asked: list[str | None] = []

    async def handle(request: httpx.Request) -> httpx.Response:
        asked.append(request.headers.get("if-none-match"))
        return httpx.Response(200, json={"keys": idp.jwks(["k1"])},
                              headers=[(b"etag", '"v1-\u00e9"'.encode("latin-1"))])

    cfg = IssuerConfig.model_validate({
        "name": "idp", "issuer": "https://idp.test", "audiences": ["api"],
        "tenant_pattern": "^[a-z]+$", "jwks": {"url": URL}})
    keys = KeySet(cfg, httpx.AsyncClient(transport=httpx.MockTransport(handle)))
    await keys.start()
    await keys.refresh()  # raised UnicodeEncodeError
    assert asked == [None, None]
    assert await keys.find("k1", "RS256") != []
    await keys.close()


async def test_a_token_without_kid_signed_by_a_new_key_is_found_by_a_refetch(
        idp: DevIssuer) -> None:
    """With k1 known, a kid-less token signed by k2, just published, once failed as a bad
    signature until the next scheduled refresh (a day, with max-age=86400)."""
    fake, clock = FakeIdP(idp.jwks(["k1"]), "max-age=86400"), Clock()
    keys = keyset(fake, clock, max_ttl="1d")
    await keys.start()
    verifier = JwtVerifier([keys._issuer], {"idp": keys})
    fake.keys = idp.jwks(["k1", "k2"])
    token = tokens.mint(idp.keys["k2"], "RS256", idp.claims())
    identity = await verifier.verify(token, time.time())
    assert isinstance(identity, Identity), identity
    assert fake.fetches == 2
    forged = tokens.mint(tokens.generate_key("RS256"), "RS256", idp.claims())
    assert await verifier.verify(forged, time.time()) == Reason.BAD_SIGNATURE
    assert fake.fetches == 2  # the refetch is bounded: one per refetch_interval
    await keys.close()


@pytest.mark.parametrize("claim", [[{}] * 1900, {"a": [1, 2]}, 7, True],
                         ids=["list-of-objects", "object", "number", "bool"])
async def test_a_tenant_claim_that_is_not_a_string_is_not_kept(
        idp: DevIssuer, claim: object) -> None:
    """Tenancy refuses it anyway; kept as is, a signed token's list of 1,900 objects cost the
    token cache 16 times the bytes it counted (str(claim))."""
    keys = keyset(FakeIdP(idp.jwks(["k1"])), Clock())
    await keys.start()
    verifier = JwtVerifier([keys._issuer], {"idp": keys})
    identity = await verifier.verify(idp.token(tenant=claim), time.time())
    assert isinstance(identity, Identity) and identity.tenant_claim is NOT_A_STRING
    await keys.close()


async def test_a_token_without_kid_may_use_any_key_of_its_algorithm(idp: DevIssuer) -> None:
    fake, clock = FakeIdP(idp.jwks(["k1", "k2"])), Clock()
    keys = keyset(fake, clock)
    await keys.start()
    assert sorted(k.key_id or "" for k in await keys.find(None, "RS256")) == ["k1", "k2"]
    assert [k.key_id for k in await keys.find("k2", "RS256")] == ["k2"]
    await keys.close()


async def test_generation_moves_when_a_key_is_withdrawn_revision_on_any_change(
        idp: DevIssuer) -> None:
    # The rejected-token cache watches the revision: an added key may verify a signature
    # refused before. The first load is a change from no keys.
    fake, clock = FakeIdP(idp.jwks(["k1"]), "max-age=60"), Clock()
    keys = keyset(fake, clock)
    await keys.start()
    seen = [(keys.generation, keys.revision)]
    for served in (["k1"], ["k1", "k2"], ["k2"], ["k2"]):  # same, added, k1 gone, same
        fake.keys = idp.jwks(served)
        await keys.refresh()
        seen.append((keys.generation, keys.revision))
    assert seen == [(0, 1), (0, 1), (0, 2), (1, 3), (1, 3)]
    await keys.close()


async def test_keys_are_refreshed_when_stale_even_if_nothing_asks_for_them(
        idp: DevIssuer, monkeypatch: pytest.MonkeyPatch) -> None:
    # Cached tokens never call find(): without its own refresh, a withdrawn key would go
    # unnoticed. With a TTL of zero the loop refreshes every MIN_REFRESH_WAIT.
    monkeypatch.setattr("tenantgate.identity.jwks.MIN_REFRESH_WAIT", 0.001)
    fake, clock = FakeIdP(idp.jwks(["k1", "k2"]), "max-age=0"), Clock()
    keys = keyset(fake, clock, min_ttl="0s")
    await keys.start()
    fake.keys = idp.jwks(["k2"])
    for _ in range(1000):
        if keys.generation:
            break
        await asyncio.sleep(0.001)
    assert keys.generation == 1 and fake.fetches >= 2
    await keys.close()
    fetches = fake.fetches
    await asyncio.sleep(0.01)
    assert fake.fetches == fetches  # close() ended the loop


async def test_an_unexpected_error_does_not_end_the_refresh_loop(
        idp: DevIssuer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
        ) -> None:
    monkeypatch.setattr("tenantgate.identity.jwks.MIN_REFRESH_WAIT", 0.001)
    fake, clock = FakeIdP(idp.jwks(["k1", "k2"]), "max-age=0"), Clock()
    keys = keyset(fake, clock, min_ttl="0s")
    await keys.start()
    # A bug's stand-in past the fetch (whatever the endpoint does is a FetchFailed).
    prepare_keys = jwks_module.prepare
    monkeypatch.setattr(jwks_module, "prepare", lambda *_: 1 / 0)
    for _ in range(1000):
        if fake.fetches >= 3:
            break
        await asyncio.sleep(0.001)
    monkeypatch.setattr(jwks_module, "prepare", prepare_keys)
    fake.keys = idp.jwks(["k2"])
    for _ in range(1000):
        if keys.generation:
            break
        await asyncio.sleep(0.001)
    assert keys.generation == 1  # still refreshing after the errors
    assert "JWKS refresh of idp failed" in caplog.text
    await keys.close()


async def _a_bug(_response: httpx.Response) -> bytes:
    raise ZeroDivisionError  # a bug's stand-in inside the GET, where network errors come from


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_bug_in_the_fetch_is_an_internal_error_not_a_failed_fetch(
        idp: DevIssuer, monkeypatch: pytest.MonkeyPatch) -> None:
    # Relabelled FetchFailed, it counted as the IdP failing, backed off, and Checks got 503
    # 'unavailable': nothing alerted on a bug.
    monkeypatch.setattr("tenantgate.identity.jwks.MIN_REFRESH_WAIT", 0.001)
    fake, clock = FakeIdP(idp.jwks(["k1"]), "max-age=0"), Clock()
    keys = keyset(fake, clock, min_ttl="0s")
    read_body = jwks_module._read_bounded
    monkeypatch.setattr(jwks_module, "_read_bounded", _a_bug)
    internal = _sample("tenantgate_internal_errors_total")
    failed = _sample("tenantgate_jwks_fetches_total", issuer="idp", result="error")
    await keys.start()  # does not fail the start
    assert _sample("tenantgate_internal_errors_total") == internal + 1
    assert _sample("tenantgate_jwks_fetches_total", issuer="idp", result="error") == failed
    with pytest.raises(ZeroDivisionError):  # a Check meets the bug: gRPC INTERNAL, counted
        await keys.find("k1", "RS256")
    fetches = fake.fetches
    for _ in range(1000):  # the refresh loop meets it again, and goes on
        if fake.fetches > fetches + 1:
            break
        await asyncio.sleep(0.001)
    monkeypatch.setattr(jwks_module, "_read_bounded", read_body)
    for _ in range(1000):
        if keys._keys:
            break
        await asyncio.sleep(0.001)
    assert await keys.find("k1", "RS256") != []  # the loop survived the bug
    await keys.close()


async def test_a_bug_in_the_fetch_still_withdraws_trust_past_max_stale(
        idp: DevIssuer, monkeypatch: pytest.MonkeyPatch) -> None:
    fake, clock = FakeIdP(idp.jwks(["k1"])), Clock()
    keys = keyset(fake, clock)  # fresh 300 s, then stale for 600 s
    await keys.start()
    monkeypatch.setattr(jwks_module, "_read_bounded", _a_bug)
    clock.now += 300 + 600
    with pytest.raises(ZeroDivisionError):
        await keys.find("k1", "RS256")
    assert keys.generation == 1  # tokens in the token cache are verified again
    await keys.close()


async def test_inline_keys_get_no_refresh_loop(idp: DevIssuer) -> None:
    fake, clock = FakeIdP([]), Clock()
    keys = keyset(fake, clock, url=None, inline={"keys": idp.jwks(["k1"])})
    await keys.start()
    assert await keys.find("k1", "RS256") != [] and fake.fetches == 0
    assert not any(not t.done() for t in asyncio.all_tasks()
                   if t is not asyncio.current_task())


def discovering_keyset(handle: Callable[[httpx.Request], Awaitable[httpx.Response]],
                       clock: Clock) -> KeySet:
    """An issuer with discovery, max_stale 600 s, whose IdP answers with `handle`."""
    cfg = IssuerConfig.model_validate({
        "name": "idp", "issuer": "https://idp.test", "audiences": ["api"],
        "tenant_pattern": "^[a-z]+$", "jwks": {"discovery": True, "max_stale": "600s"}})
    return KeySet(cfg, httpx.AsyncClient(transport=httpx.MockTransport(handle)), clock=clock,
                  jitter=no_jitter)


async def test_a_moved_jwks_uri_is_discovered_again_after_a_failed_fetch(idp: DevIssuer) -> None:
    """With discovery, the first jwks_uri was kept for good: once the IdP moved its keys (the
    old URL 404s), every fetch failed, and past max_stale every token got 503 until a restart."""
    jwks_uri = {"now": "https://idp.test/old.json"}
    asked: list[str] = []

    async def handle(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        if request.url.path == "/.well-known/openid-configuration":
            return httpx.Response(200, json={"issuer": "https://idp.test",
                                             "jwks_uri": jwks_uri["now"]})
        if str(request.url) == jwks_uri["now"]:
            return httpx.Response(200, json={"keys": idp.jwks(["k1"])},
                                  headers={"cache-control": "max-age=60"})
        return httpx.Response(404)

    clock = Clock()
    keys = discovering_keyset(handle, clock)
    await keys.start()
    jwks_uri["now"] = "https://idp.test/new.json"
    clock.now += 60 + 600  # past max_stale: the next find must fetch
    with pytest.raises(KeySetUnavailable):
        await keys.find("k1", "RS256")  # the old URL 404s
    with pytest.raises(KeySetUnavailable):
        await keys.find("k1", "RS256")  # backing off: no fetch, no discovery
    clock.now += FAILED_FETCH_BACKOFF
    assert await keys.find("k1", "RS256") != []
    discovery = "/.well-known/openid-configuration"
    assert asked == [discovery, "/old.json", "/old.json", discovery, "/new.json"]
    await keys.close()


@pytest.mark.parametrize("max_stale", ["600s", "0s"], ids=["in-background", "waited-for"])
async def test_keys_stale_as_soon_as_fetched_are_not_refetched_on_every_request(
        idp: DevIssuer, max_stale: str) -> None:
    """min_ttl 0 with an IdP answering no-cache made keys stale as soon as fetched: every Check
    started a fetch (one it waited for with max_stale 0), so the IdP saw one per request per
    replica."""
    fake, clock = FakeIdP(idp.jwks(["k1"]), "no-cache"), Clock()
    keys = keyset(fake, clock, min_ttl="0s", max_stale=max_stale)
    await keys.start()
    for round_ in range(1, 4):
        for _ in range(100):
            assert await keys.find("k1", "RS256") != []
            await settle()
        assert fake.fetches == round_  # start-up, then one per MIN_REFRESH_WAIT
        clock.now += jwks_module.MIN_REFRESH_WAIT
    await keys.close()


@pytest.mark.parametrize("cache_control, age, fresh_for", [
    ("max-age=3600", "3500", 100), ("max-age=3600", "4000", 60), ("max-age=120", "0", 120),
    ("max-age=3600", "abc", 3600), ("max-age=120", "-5", 120), ("max-age=120", "1.5", 120),
    ("max-age=3600", ["3500", "10"], 3600), ("max-age=3600", "9" * 5000, 60),
    ("max-age=" + "9" * 400, "9" * 400, 60), ("max-age=" + "9" * 400, "100", 3600),
    (None, "100", 300),
], ids=["age-subtracted", "age-past-max-age", "age-zero", "age-malformed", "age-negative",
        "age-fraction", "two-ages", "age-huge", "both-huge", "max-age-huge", "no-max-age"])
async def test_the_age_a_cache_used_up_is_subtracted_from_max_age(
        idp: DevIssuer, cache_control: str | None, age: str | list[str],
        fresh_for: float) -> None:
    """RFC 9111 4.2.3: a CDN's max-age=3600 with Age: 3500 leaves 100 s, not 3600 (then the
    min_ttl/max_ttl clamp); an Age that is not one whole number is ignored."""
    fetches: list[int] = []

    async def handle(request: httpx.Request) -> httpx.Response:
        fetches.append(1)
        ages = [age] if isinstance(age, str) else age
        headers = [("age", a) for a in ages]
        headers += [("cache-control", cache_control)] if cache_control else []
        return httpx.Response(200, json={"keys": idp.jwks(["k1"])}, headers=headers)

    clock = Clock()
    cfg = keyset(FakeIdP([]), clock)._issuer
    keys = KeySet(cfg, httpx.AsyncClient(transport=httpx.MockTransport(handle)), clock=clock,
                  jitter=no_jitter)
    await keys.start()
    clock.now += fresh_for - 0.5
    assert await keys.find("k1", "RS256") != []
    await settle()
    assert len(fetches) == 1, "refreshed before the key set went stale"
    clock.now += 1
    assert await keys.find("k1", "RS256") != []
    await settle()
    assert len(fetches) == 2, "not refreshed once stale"
    await keys.close()


async def test_a_key_replaced_under_its_kid_is_found_by_a_refetch(idp: DevIssuer) -> None:
    """RFC 7517 4.5 only says kids SHOULD differ: an IdP that put a new key behind k1 had its
    new tokens refused as bad signatures, without a refetch, until the next scheduled refresh
    (a day, with max-age=86400)."""
    fake, clock = FakeIdP(idp.jwks(["k1"]), "max-age=86400"), Clock()
    keys = keyset(fake, clock, max_ttl="1d")
    await keys.start()
    verifier = JwtVerifier([keys._issuer], {"idp": keys})
    replacement = DevIssuer(issuer=idp.issuer, kid="k1")
    fake.keys = replacement.jwks(["k1"])
    assert isinstance(await verifier.verify(replacement.token(), time.time()), Identity)
    assert fake.fetches == 2
    await keys.close()


async def test_forged_signatures_under_a_known_kid_refetch_at_most_once_per_interval(
        idp: DevIssuer) -> None:
    fake, clock = FakeIdP(idp.jwks(["k1"]), "max-age=86400"), Clock()
    keys = keyset(fake, clock, max_ttl="1d")
    await keys.start()
    verifier = JwtVerifier([keys._issuer], {"idp": keys})
    forger = DevIssuer(issuer=idp.issuer, kid="k1")
    for n in range(200):
        forged = forger.token(subject=f"user-{n}")
        assert await verifier.verify(forged, time.time()) == Reason.BAD_SIGNATURE
    assert fake.fetches == 2  # start-up + one refetch
    clock.now += 30  # refetch_interval
    for _ in range(200):
        assert await verifier.verify(forger.token(), time.time()) == Reason.BAD_SIGNATURE
    assert fake.fetches == 3
    await keys.close()


async def check_bearer(verifier: JwtVerifier, rejected: RejectedTokens,
                       token: str) -> Identity | Reason:
    """What the identity stage does with a token the token cache does not hold."""
    key, now = token_key(token), time.time()
    if (reason := rejected.get(key)) is not None:
        return reason
    revision = rejected.keys_revision()
    verified = await verifier.verify(token, now)
    if isinstance(verified, Reason):
        rejected.put(key, verified, revision, verifier.refetch_missed())
    return verified


async def test_a_bad_signature_is_not_remembered_while_its_refetch_is_refused(
        idp: DevIssuer) -> None:
    """A token signed by a key just put behind a known kid, refused while the refetch was rate
    limited, was remembered as a bad signature: its retries were refused from the rejected-token
    cache, never verified again, so never refetched, even once the interval allowed it."""
    fake, clock = FakeIdP(idp.jwks(["k1"]), "max-age=86400"), Clock()
    keys = keyset(fake, clock, max_ttl="1d")
    await keys.start()
    verifier = JwtVerifier([keys._issuer], {"idp": keys})
    rejected = RejectedTokens(100, 3600.0, [keys])
    forged = DevIssuer(issuer=idp.issuer, kid="k1").token()
    assert await check_bearer(verifier, rejected, forged) == Reason.BAD_SIGNATURE
    assert fake.fetches == 2  # its refetch ran and changed nothing: remembered
    assert rejected.get(token_key(forged)) == Reason.BAD_SIGNATURE

    replacement = DevIssuer(issuer=idp.issuer, kid="k1")
    fake.keys = replacement.jwks(["k1"])
    token = replacement.token()
    assert await check_bearer(verifier, rejected, token) == Reason.BAD_SIGNATURE
    assert fake.fetches == 2  # within refetch_interval: refused
    assert rejected.get(token_key(token)) is None
    clock.now += 30
    assert isinstance(await check_bearer(verifier, rejected, token), Identity)
    assert fake.fetches == 3
    await keys.close()


async def test_a_missed_refetch_of_one_issuer_does_not_stop_caching_anothers_bad_signatures(
        idp: DevIssuer) -> None:
    """One flag for the whole gateway: once any issuer's refetch was refused (or its keys were
    past max_stale, where no fetch could clear it), no bad signature of any issuer was cached."""
    other = DevIssuer(issuer="https://other.test", kid="k1")
    fake, clock = FakeIdP(idp.jwks(["k1"]), "max-age=86400"), Clock()
    keys = keyset(fake, clock, max_ttl="1d")
    other_fake = FakeIdP(other.jwks(["k1"]), "max-age=86400")
    other_keys = KeySet(keys._issuer.model_copy(update={"name": "other", "issuer": other.issuer}),
                        httpx.AsyncClient(transport=httpx.MockTransport(other_fake.handle)),
                        clock=clock, jitter=no_jitter)
    await keys.start()
    await other_keys.start()
    verifier = JwtVerifier([keys._issuer, other_keys._issuer], {"idp": keys, "other": other_keys})
    rejected = RejectedTokens(100, 3600.0, [keys, other_keys])
    forger = DevIssuer(issuer=idp.issuer, kid="k1")
    for token in (forger.token(subject="first"), forger.token(subject="second")):
        assert await check_bearer(verifier, rejected, token) == Reason.BAD_SIGNATURE
    assert fake.fetches == 2 and len(rejected) == 1  # the second token's refetch was refused
    fake.failing = True
    clock.now += 30
    assert await check_bearer(verifier, rejected, forger.token(subject="third")) \
        == Reason.BAD_SIGNATURE
    assert fake.fetches == 3 and len(rejected) == 1  # its refetch ran and failed

    forged = DevIssuer(issuer=other.issuer, kid="k1").token()
    assert await check_bearer(verifier, rejected, forged) == Reason.BAD_SIGNATURE
    assert other_fake.fetches == 2  # its own refetch ran and changed nothing: final
    assert rejected.get(token_key(forged)) == Reason.BAD_SIGNATURE
    await keys.close()
    await other_keys.close()


async def test_the_last_good_jwks_uri_is_still_asked_while_discovery_is_down(
        idp: DevIssuer) -> None:
    """A failed JWKS fetch dropped the discovered jwks_uri: every later attempt had to discover
    it first, so while discovery was down the (working) JWKS URL was never asked again, and past
    max_stale every token of the issuer got 503."""
    asked: list[str] = []
    down = {"discovery": False, "jwks": False}

    async def handle(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        if request.url.path == "/.well-known/openid-configuration":
            if down["discovery"]:
                return httpx.Response(503)
            return httpx.Response(200, json={"issuer": "https://idp.test", "jwks_uri": URL})
        if down["jwks"]:
            return httpx.Response(503)
        return httpx.Response(200, json={"keys": idp.jwks(["k1"])},
                              headers={"cache-control": "max-age=60"})

    clock = Clock()
    keys = discovering_keyset(handle, clock)
    await keys.start()
    down["jwks"] = True
    with pytest.raises(FetchFailed):
        await keys.refresh()
    down.update(jwks=False, discovery=True)
    clock.now += 60 + 600  # past max_stale: the next find must fetch
    assert await keys.find("k1", "RS256") != []
    discovery = "/.well-known/openid-configuration"
    assert asked == [discovery, "/jwks.json", "/jwks.json", discovery, "/jwks.json"]
    await keys.refresh()  # that fetch worked: no discovery before the next one
    assert asked[5:] == ["/jwks.json"]
    await keys.close()


class SnapshotIdP(FakeIdP):
    """Answers with the keys as they were when the request arrived, as an IdP (or a CDN in
    front of it) does: a fetch held until `released` brings back the keys from before."""

    def __init__(self, keys: list[dict[str, Any]]) -> None:
        super().__init__(keys)
        self.released = asyncio.Event()
        self.released.set()

    async def handle(self, request: httpx.Request) -> httpx.Response:
        keys = self.keys
        self.fetches += 1
        await self.released.wait()
        if self.failing:
            return httpx.Response(503)
        return httpx.Response(200, json={"keys": keys}, headers={"cache-control": "max-age=60"})


async def fetch_held_at_the_idp(idp: DevIssuer) -> tuple[SnapshotIdP, KeySet, JwtVerifier,
                                                          RejectedTokens]:
    """A key set whose background refresh has reached the IdP, before a rotation, and waits."""
    fake, clock = SnapshotIdP(idp.jwks(["k1"])), Clock()
    keys = keyset(fake, clock)
    await keys.start()
    fake.released.clear()
    clock.now += 61  # stale: the next find refreshes in the background
    assert await keys.find("k1", "RS256") != []
    await settle()
    assert fake.fetches == 2
    return fake, keys, JwtVerifier([keys._issuer], {"idp": keys}), RejectedTokens(
        100, 3600.0, [keys])


ROTATIONS: dict[str, Callable[[DevIssuer], tuple[list[dict[str, Any]], str]]] = {
    "key-replaced-under-its-kid": lambda idp: (
        (new := DevIssuer(issuer=idp.issuer, kid="k1")).jwks(["k1"]), new.token()),
    "new-kid": lambda idp: (
        idp.jwks(["k1", "k2"]), tokens.mint(idp.keys["k2"], "RS256", idp.claims(), kid="k2")),
}


@pytest.mark.parametrize("rotate", ROTATIONS.values(), ids=ROTATIONS.keys())
async def test_a_refetch_does_not_join_a_fetch_that_left_before_the_key_was_published(
        idp: DevIssuer, rotate: Callable[[DevIssuer], tuple[list[dict[str, Any]], str]]) -> None:
    """The refetch joined the background refresh in flight, which brought back the keys from
    before the rotation: the budget was spent, the valid token refused (a replaced key's as a
    bad signature, remembered by the rejected-token cache; a new kid's as an unknown key)."""
    fake, keys, verifier, rejected = await fetch_held_at_the_idp(idp)
    fake.keys, token = rotate(idp)
    checked = asyncio.ensure_future(check_bearer(verifier, rejected, token))
    await settle()
    assert not checked.done() and fake.fetches == 2  # its refetch waits on the fetch in flight
    fake.released.set()
    assert isinstance(await checked, Identity)
    assert fake.fetches == 3 and len(rejected) == 0
    await keys.close()


async def test_a_refetch_still_happens_when_the_check_waiting_for_it_is_cancelled(
        idp: DevIssuer) -> None:
    """The Check whose refetch waited out the fetch in flight was cancelled (Envoy's timeout is
    shorter than a fetch's): the refetch allowance was spent and no fetch followed, so the
    valid token's retries were refused for the rest of refetch_interval."""
    fake, keys, verifier, rejected = await fetch_held_at_the_idp(idp)
    fake.keys, token = ROTATIONS["new-kid"](idp)
    checked = asyncio.ensure_future(check_bearer(verifier, rejected, token))
    await settle()
    assert not checked.done() and fake.fetches == 2
    checked.cancel()
    await asyncio.gather(checked, return_exceptions=True)
    fake.released.set()  # the fetch in flight brings back the keys from before
    await settle()
    assert fake.fetches == 3  # the refetch went ahead without its Check
    assert isinstance(await check_bearer(verifier, rejected, token), Identity)
    await keys.close()


async def test_a_failed_refetch_whose_check_was_cancelled_is_not_reported_as_a_bug(
        idp: DevIssuer) -> None:
    """Nobody was left to retrieve its FetchFailed: asyncio logged "Task exception was never
    retrieved" with a traceback, at ERROR, during every IdP outage."""
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        fake, keys, verifier, rejected = await fetch_held_at_the_idp(idp)
        fake.keys, token = ROTATIONS["new-kid"](idp)
        checked = asyncio.ensure_future(check_bearer(verifier, rejected, token))
        await settle()
        checked.cancel()
        await asyncio.gather(checked, return_exceptions=True)
        fake.failing = True
        fake.released.set()  # the fetch in flight fails, and the refetch waiting on it
        await settle()
        await keys.close()
        del checked
        gc.collect()  # asyncio reports an unretrieved exception when the task is collected
        await settle()
    finally:
        loop.set_exception_handler(None)
    assert [c["message"] for c in reported] == []


async def test_a_refetch_after_a_fetch_in_flight_failed_backs_off_and_is_not_final(
        idp: DevIssuer) -> None:
    fake, keys, verifier, rejected = await fetch_held_at_the_idp(idp)
    fake.keys, token = ROTATIONS["key-replaced-under-its-kid"](idp)
    fake.failing = True
    checked = asyncio.ensure_future(check_bearer(verifier, rejected, token))
    await settle()
    assert not checked.done()
    fake.released.set()
    assert await checked == Reason.BAD_SIGNATURE
    assert fake.fetches == 2  # no second fetch right after a failed one
    assert rejected.get(token_key(token)) is None  # a retry verifies again
    await keys.close()
