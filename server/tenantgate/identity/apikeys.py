"""API-key verification: the key format, the keyed hash, a brief lookup cache that revocations
empty on every replica (Redis pub/sub), and cheap batched usage counting."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import math
import random
import re
import secrets
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from tenantgate.decision import Reason
from tenantgate.errors import ApiKeyStoreUnavailable
from tenantgate.identity.apikey_store import ApiKeyStore, KeyRecord, UnreadableKeyRecord
from tenantgate.identity.backoff import Backoff
from tenantgate.identity.model import API_KEY_SUBJECT_PREFIX, Identity
from tenantgate.identity.store_durability import StoreDurability
from tenantgate.observe import apikeys as apikey_metrics
from tenantgate.observe import store_errors
from tenantgate.observe.apikeys import APIKEY_CHECKS, APIKEY_REVOKED_ATTEMPTS, KeyResult
from tenantgate.observe.audit import AuditLog
from tenantgate.observe.metrics import OTHER_TENANT
from tenantgate.observe.throttle import Throttle
from tenantgate.tenancy import API_KEY_ISSUER

if TYPE_CHECKING:
    from redis.asyncio.client import PubSub

    from tenantgate.config.apikeys import ApiKeysConfig
    from tenantgate.config.model import Config

log = logging.getLogger("tenantgate.apikeys")
KEY_ID_CHARS = 16  # lower-case hex: 64 random bits, unique enough to index, not a secret
SECRET_BYTES = 32  # 256 bits: the secret is what is guessed, never the id
_KEY_ID = re.compile(r"[0-9a-f]{16}")
_SECRET = re.compile(r"[A-Za-z0-9_-]{43}")
_POLL_SECONDS = 1.0  # how long one wait for a revocation message lasts
_CLOSE_WAIT = 2 * _POLL_SECONDS
_CONFIRM_SECONDS = 5.0  # for Redis to confirm (or refuse) SUBSCRIBE; off the Check path
# Between subscription attempts: doubled after each failure up to the cap, less a random part
# of up to half (after a Redis restart every replica lost its subscription at the same moment:
# they must not all come back at the same moments), back to the first once subscribed.
_RETRY_FIRST = 0.5
_RETRY_MAX = 30.0
# A store that is down fails every Check with an API key (and every attempt to subscribe):
# its warning is said at most this often, the reason with it.
STORE_DOWN_WARN_EVERY = 60.0


def new_key_id() -> str:
    return secrets.token_hex(KEY_ID_CHARS // 2)


def new_secret() -> str:
    return secrets.token_urlsafe(SECRET_BYTES)


def format_key(prefix: str, key_id: str, secret: str) -> str:
    return f"{prefix}_{key_id}_{secret}"


def parse_key(prefix: str, presented: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed key, else None; by position, as the secret may hold `_`."""
    head = f"{prefix}_"
    if not presented.startswith(head):
        return None
    key_id, sep, secret = presented[len(head):].partition("_")
    if not sep or not _KEY_ID.fullmatch(key_id) or not _SECRET.fullmatch(secret):
        return None
    return key_id, secret


@dataclass(frozen=True, slots=True)
class KeyRefusal:
    """Why a presented key was refused, and the stored key it named, if one exists: the
    client is told nothing more (every refusal looks alike), the audit line names the key."""

    reason: Reason
    record: KeyRecord | None


class Hasher:
    """HMAC-SHA256 under the server secret; the key id is bound in so digests cannot be swapped
    between records. The two methods are the whole cost of a verify, counted by the tests."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def digest(self, key_id: str, secret: str) -> str:
        message = f"{key_id}\x00{secret}".encode("utf-8", "surrogateescape")
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def matches(self, presented: str, stored: str) -> bool:
        return hmac.compare_digest(presented.encode(), stored.encode())


class ApiKeys:
    """The verifier one Runtime holds; `store` and `hasher` are shared with the admin API."""

    def __init__(self, cfg: ApiKeysConfig, registry: frozenset[str], audit: AuditLog | None,
                 client: Redis | None = None,
                 jitter: Callable[[], float] = random.random,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.cfg = cfg
        self.prefix = cfg.prefix
        self.hasher = Hasher(cfg.hash_secret.value)
        self._dummy = self.hasher.digest("", "no such key")  # compared against for unknown ids
        self._client = client or redis_client(cfg, socket_timeout=cfg.redis_timeout,
                                              socket_connect_timeout=cfg.redis_timeout)
        self.store = ApiKeyStore(self._client, cfg.channel)
        self.store_secrets = store_secrets(cfg)  # masked in what a store failure says
        self._registry = registry
        for label in (*registry, OTHER_TENANT):  # at 0 from the start: alerts use increase()
            APIKEY_REVOKED_ATTEMPTS.labels(label)
        APIKEY_CHECKS.labels(OTHER_TENANT, KeyResult.UNAVAILABLE)  # _read's, the only tenant
        self._audit = audit
        self._jitter = jitter
        self._sleep = sleep  # the wait between subscription attempts (a test counts them)
        # key id -> (record or None for unknown, monotonic time fetched); LRU-bounded.
        self._cache: OrderedDict[str, tuple[KeyRecord | None, float]] = OrderedDict()
        self._generation = 0  # bumped by every invalidation; a slower lookup then is not cached
        self._hits: Counter[tuple[str, str]] = Counter()
        self._revoked_attempts: Counter[str] = Counter()
        self._unsent: Counter[tuple[str, str]] = Counter()  # (tenant, usage field) Redis refused
        self._last_used: dict[str, int] = {}  # pending writes
        self._last_used_sent: dict[str, float] = {}  # key id -> monotonic time of last write
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self.subscribed = asyncio.Event()  # set while the revocation channel is live
        self._unreadable_said = Throttle(60.0)
        self._lookup_failure_said = Throttle(STORE_DOWN_WARN_EVERY)
        self._subscribe_failure_said = Throttle(STORE_DOWN_WARN_EVERY)
        self._subscription_failing = False  # a failure was logged: say when it is over
        self.durability = StoreDurability()

    # -- verification -----------------------------------------------------------------------

    async def check(self, presented: str, request_id: str = "") -> Identity | KeyRefusal:
        """The key's identity, or why it was refused with the stored key the refusal was about
        when there was one (a wrong secret for a real key id, a revoked or expired key), for
        the Check's audit line; `request_id` joins a revoked key's audit line to the Check's."""
        parsed = parse_key(self.prefix, presented)
        # Every path computes one HMAC and one constant-time compare, so an unknown id and a
        # wrong secret cost the same; a malformed key skips only the store lookup.
        key_id, secret = parsed if parsed is not None else ("", presented)
        record = await self._lookup(key_id) if parsed is not None else None
        digest = self.hasher.digest(key_id, secret)
        matched = self.hasher.matches(digest, record.digest if record else self._dummy)
        if record is None or not matched:
            self._count(record, KeyResult.INVALID)
            return KeyRefusal(Reason.API_KEY_INVALID, record)
        if record.revoked:
            self._revoked_attempt(record, request_id)
            return KeyRefusal(Reason.API_KEY_REVOKED, record)
        if record.expired(time.time()):
            self._count(record, KeyResult.EXPIRED)
            return KeyRefusal(Reason.API_KEY_EXPIRED, record)
        self._count(record, KeyResult.OK)
        self._used(record)
        return Identity(issuer=API_KEY_ISSUER, subject=API_KEY_SUBJECT_PREFIX + record.key_id,
                        tenant_claim=record.tenant, scopes=frozenset(record.scopes),
                        roles=frozenset(), key_id=record.key_id,
                        expires_at=float(record.expires_at) if record.expires_at else None)

    async def _lookup(self, key_id: str) -> KeyRecord | None:
        now = time.monotonic()
        cached = self._cache.get(key_id)
        if cached is not None and now - cached[1] < self.cfg.cache_ttl:
            self._cache.move_to_end(key_id)
            return cached[0]
        generation = self._generation
        record = await self._read(key_id)
        if generation == self._generation:
            self._cache[key_id] = (record, now)
            self._cache.move_to_end(key_id)
            while len(self._cache) > self.cfg.cache_entries:
                self._cache.popitem(last=False)
        return record

    async def _read(self, key_id: str) -> KeyRecord | None:
        try:
            # In all: on a new connection, the connect, redis-py's handshake replies and the
            # HGETALL each had redis_timeout of their own, so a slow Redis (a failover) held
            # a Check past Envoy's authz timeout, which envoy-config sets from this one.
            async with asyncio.timeout(self.cfg.redis_timeout):
                return await self.store.get(key_id)
        except (RedisError, OSError) as exc:  # TimeoutError included
            APIKEY_CHECKS.labels(OTHER_TENANT, KeyResult.UNAVAILABLE).inc()
            # The reason (WRONGPASS after a password rotation, NOPERM, READONLY, a TLS
            # certificate refused) is the operator's only lead; it names no key or secret.
            if self._lookup_failure_said.ready():
                log.warning("API-key store unavailable (Checks with API keys fail closed with "
                            "503): %s", store_errors.describe(exc, self.store_secrets))
            # Fail closed (503): a cached record past its TTL may have been revoked since.
            raise ApiKeyStoreUnavailable("API-key store unavailable") from None
        except UnreadableKeyRecord:
            # A hand edit left bytes that are not UTF-8: the key cannot be checked, so it is
            # refused as an unknown one is (the same 401), and cached as one. The operator
            # learns which from the log, not from a traceback on every request.
            if self._unreadable_said.ready():
                log.warning("API key record %s is not UTF-8: refused as unknown until fixed",
                            key_id)
            return None

    def invalidate(self, key_id: str | None = None) -> None:
        """Drop one cached key, or all of them (after a lost subscription)."""
        self._generation += 1
        if key_id is None:
            self._cache.clear()
        else:
            self._cache.pop(key_id, None)

    def _label(self, record: KeyRecord | None) -> str:
        return record.tenant if record and record.tenant in self._registry else OTHER_TENANT

    def _count(self, record: KeyRecord | None, result: KeyResult) -> None:
        APIKEY_CHECKS.labels(self._label(record), result).inc()

    def _revoked_attempt(self, record: KeyRecord, request_id: str) -> None:
        self._count(record, KeyResult.REVOKED)
        APIKEY_REVOKED_ATTEMPTS.labels(self._label(record)).inc()
        self._revoked_attempts[record.tenant] += 1
        if self._audit is not None:
            # Capped: a leaked key that was revoked may be tried once a request, at will.
            self._audit.write_capped({"event": "apikey_revoked_used", "key_id": record.key_id,
                                      "tenant": record.tenant, "request_id": request_id})

    def _used(self, record: KeyRecord) -> None:
        self._hits[(record.tenant, record.key_id)] += 1
        # last-used is coarse on purpose: one write per key per interval per replica. The
        # interval is measured on the monotonic clock (a wall clock stepped back paused the
        # writes for the length of the step); the stored value is a wall-clock timestamp.
        monotonic_now = time.monotonic()
        sent = self._last_used_sent.get(record.key_id, -math.inf)
        if monotonic_now - sent >= self.cfg.last_used_interval:
            self._last_used_sent[record.key_id] = monotonic_now
            self._last_used[record.key_id] = int(time.time())

    # -- lifecycle: revocation subscription and usage flushing --------------------------------

    async def start(self) -> None:
        apikey_metrics.subscriber_started(self, self.cfg.channel)
        self._tasks = [asyncio.create_task(self._subscribe_forever()),
                       asyncio.create_task(self._flush_forever())]
        # Wait briefly for the subscription so revocations reach us from the first Check on;
        # if Redis is down the cache TTL still bounds staleness.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.subscribed.wait(), timeout=2.0)

    async def close(self) -> None:
        # redis-py can turn a cancellation into a connection error, which the retry loop
        # would swallow: the flag ends the loops too, and the wait is bounded either way.
        self._closing = True
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            _, stuck = await asyncio.wait(self._tasks, timeout=_CLOSE_WAIT)
            if stuck:
                log.warning("API key background tasks did not stop within %.0fs", _CLOSE_WAIT)
        apikey_metrics.subscriber_closed(self)
        await self.flush_usage()
        await self._client.aclose()

    async def flush_usage(self) -> None:
        increments, self._unsent = self._unsent, Counter()
        for (tenant, key_id), count in self._hits.items():
            increments[(tenant, "requests")] += count
            increments[(tenant, f"key:{key_id}")] += count
        for tenant, count in self._revoked_attempts.items():
            increments[(tenant, "revoked_attempts")] += count
        self._hits, self._revoked_attempts = Counter(), Counter()
        last_used, self._last_used = self._last_used, {}
        if not (increments or last_used):
            return
        try:
            refused = await self.store.add_usage(increments, last_used)
        except (RedisError, OSError):
            # Nothing was sent: keep it all for the next flush (bounded by the number of keys).
            self._unsent.update(increments)
            for key_id, when in last_used.items():
                self._last_used.setdefault(key_id, when)
            return
        # Only what Redis refused is sent again; a reply lost after the write is dropped, as
        # it may have been counted (store.add_usage says why).
        self._unsent.update(refused)

    async def _flush_forever(self) -> None:
        while not self._closing:
            await asyncio.sleep(self.cfg.usage_flush_interval)
            await self.flush_usage()

    async def _subscribe_forever(self) -> None:
        backoff = Backoff(_RETRY_FIRST, _RETRY_MAX, self._jitter)
        while not self._closing:
            try:
                await self._listen()
            except (RedisError, OSError) as exc:  # TimeoutError included
                self._subscription_failed(exc)
            if self.subscribed.is_set():  # it was live: the next failure waits the first delay
                backoff.reset()
            self.subscribed.clear()
            apikey_metrics.subscriber_state(self, False)
            if not self._closing:
                await self._sleep(backoff.next_delay())

    def _subscription_failed(self, exc: BaseException) -> None:
        if self.subscribed.is_set():  # a live subscription lost (a failover): subscribe again
            log.debug("API-key revocation channel: subscription lost (%s)", type(exc).__name__)
            return
        # Redis 7 gives an ACL user no channel at all unless granted (&channel): SUBSCRIBE is
        # refused with NOPERM on every attempt, and this line is how the operator learns it.
        if self._subscribe_failure_said.ready():
            log.warning("API-key revocation channel %r unavailable (revocations reach this "
                        "replica only after cache_ttl; subscribing again with backoff): %s",
                        self.cfg.channel, store_errors.describe(exc, self.store_secrets))
        self._subscription_failing = True

    async def _listen(self) -> None:
        # Its own connection without a read timeout; health checks catch a dead peer.
        client = redis_client(self.cfg, health_check_interval=5,
                              socket_connect_timeout=self.cfg.redis_timeout)
        pubsub = client.pubsub()
        try:
            await pubsub.subscribe(self.cfg.channel)
            # subscribe() only sends: a refusal (NOPERM) is the reply read here. Nothing below
            # may run before it: each refused attempt emptied the cache and ran CONFIG GET.
            await self._confirmed(pubsub)
            self._on_subscribed()
            while not self._closing:
                message = await pubsub.get_message(timeout=_POLL_SECONDS)
                if message is not None and message.get("type") == "message":
                    data = message["data"]
                    # Anyone who can publish on the channel could send bytes that are not
                    # UTF-8: they must not end the subscription (a garbled id matches no key).
                    self.invalidate(data.decode("utf-8", "replace") if isinstance(data, bytes)
                                    else str(data))
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()
            with contextlib.suppress(RedisError, OSError):
                await client.aclose()

    def _on_subscribed(self) -> None:
        if self._subscription_failing:
            self._subscription_failing = False
            log.info("API-key revocation channel %r: subscribed again", self.cfg.channel)
        # Messages sent while we were not subscribed are lost: forget everything cached.
        self.invalidate()
        self.subscribed.set()
        apikey_metrics.subscriber_state(self, True)
        self._check_durability()

    @staticmethod
    async def _confirmed(pubsub: PubSub) -> None:
        """Until Redis confirms the subscription; an error reply raises (ResponseError)."""
        async with asyncio.timeout(_CONFIRM_SECONDS):
            while True:
                message = await pubsub.get_message(timeout=_POLL_SECONDS)
                if message is not None and message.get("type") == "subscribe":
                    return

    def _check_durability(self) -> None:
        # Once per subscription, i.e. per connection epoch (a failover or restart may have put
        # another Redis behind the URL), in a task of its own: never on the Check path.
        if self._closing:
            return
        self._tasks = [task for task in self._tasks if not task.done()]
        self._tasks.append(
            asyncio.create_task(self.durability.check(self._client, self.cfg.redis_timeout))
        )


def redis_client(cfg: ApiKeysConfig, **options: Any) -> Redis:
    """A client for the key store: the URL, plus `redis_password` when it is configured."""
    if cfg.redis_password is not None:
        options["password"] = cfg.redis_password.value.decode()
    return Redis.from_url(cfg.redis_url, **options)


def store_secrets(cfg: ApiKeysConfig) -> list[str]:
    """Every password a store failure could echo: the URL's and `redis_password`'s."""
    password = cfg.redis_password.value if cfg.redis_password is not None else None
    return store_errors.redis_secrets(cfg.redis_url, password)


def build_api_keys(config: Config, audit: AuditLog) -> ApiKeys | None:
    """The Runtime's verifier, or None when `api_keys` is not configured. It writes to the
    Runtime's own audit log (one stream per file, so lines never interleave), which the
    Runtime closes."""
    if config.api_keys is None:
        return None
    return ApiKeys(config.api_keys, frozenset(config.tenants.registry), audit)
