"""An issuer's JWKS: fetched off the event loop's critical path, cached within Cache-Control
bounds (less Age), refreshed when that expires, refetched at a bounded rate for keys it may not
have yet, stale-if-error up to a limit, a discovered URL discovered again after a failure (kept
while discovery fails); a generation count tells the token cache when keys went away, a
revision count tells the rejected-token cache when they changed at all."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from tenantgate.config.files import MAX_JWKS_BYTES, read_jwks_file
from tenantgate.config.model import IssuerConfig, JwksConfig
from tenantgate.errors import KeySetUnavailable
from tenantgate.identity.backoff import Backoff
from tenantgate.identity.keys import VerificationKey, prepare
from tenantgate.observe import metrics
from tenantgate.observe.throttle import Throttle

log = logging.getLogger("tenantgate.jwks")

_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*(\d+)", re.IGNORECASE)
_DELTA_SECONDS = re.compile(r"[0-9]+")  # RFC 9111 1.2.2: the Age header's only valid form
DELTA_SECONDS_CAP = 2.0 ** 31
# After a failed fetch, callers and the refresh loop wait this long, doubled after each further
# failure (jittered, so replicas that failed together do not retry together) up to the cap,
# back to the start after a success: 50 replicas must not ask an IdP that is down 50 times a
# second. Capped by refetch_interval too: with no usable keys every token of the issuer waits
# for the next attempt, and an unknown kid may cost a fetch per interval anyway.
FAILED_FETCH_BACKOFF = 1.0  # seconds
MAX_FAILED_FETCH_BACKOFF = 60.0
# Seconds between the keep-fresh loop's attempts, and between refreshes a request starts,
# whatever the TTL says (min_ttl 0 with `no-cache` makes keys stale as soon as fetched).
MIN_REFRESH_WAIT = 1.0
# What one GET of an issuer's endpoint may raise whatever it serves (see KeySet._get).
_NETWORK_ERRORS = (httpx.HTTPError, httpx.InvalidURL, ValueError, OSError, TimeoutError)


class FetchFailed(Exception):
    """One fetch of a JWKS or discovery document failed (kept inside this module)."""


class KeySet:
    """Verification keys for one issuer; `find` is the only call on the request path."""

    def __init__(self, issuer: IssuerConfig, client: httpx.AsyncClient | None,
                 clock: Callable[[], float] = time.monotonic,
                 jitter: Callable[[], float] = random.random,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        assert issuer.jwks is not None
        self._issuer = issuer
        metrics.declare_jwks_issuer(issuer.name)
        self._cfg: JwksConfig = issuer.jwks
        self._client = client
        self._clock = clock
        self._sleep = sleep  # the refresh loop's, on the same clock as `clock`
        self._keys: list[VerificationKey] = []
        self._etag: str | None = None
        # With discovery: the jwks_uri of the last successful fetch, discovered again after a
        # failed one (the IdP may have moved its keys) but kept while discovery fails.
        self._jwks_url: str | None = None
        self._rediscover = False
        self._fresh_until = 0.0  # refresh in the background after this
        self._usable_until = 0.0  # past this (fresh + max_stale) keys are no longer trusted
        self._last_unknown_kid_fetch = -float("inf")
        self._last_fetch_started = -float("inf")
        self._next_attempt = -float("inf")  # after a failed fetch, callers wait this out
        # Fetches failed in a row: the wait after the first is exactly FAILED_FETCH_BACKOFF,
        # and never shorter (fetches of a failing endpoint stay a second apart).
        self._backoff = Backoff(
            FAILED_FETCH_BACKOFF, min(MAX_FAILED_FETCH_BACKOFF, self._cfg.refetch_interval),
            jitter, floor=FAILED_FETCH_BACKOFF)
        self._inflight: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        # Counts fetches that removed a key. Tokens verified under an older generation are
        # verified again (tokens from a withdrawn key must not live on in the token cache).
        self.generation = 0
        self._distrusted = False  # past _usable_until with no fetch since: generation moved
        self.revision = 0  # counts fetches that changed the keys at all (added ones too)
        self._fingerprints: frozenset[str] = frozenset()
        self._loop_failing = Throttle(60.0)  # one traceback a minute for a recurring bug
        self._fetch_failing = Throttle(60.0)  # and one line a minute saying why fetches fail

    def carry_over(self, old: KeySet) -> None:
        """On a reload, before start(): take what the replaced runtime's key set of this issuer
        knows (keys, their freshness and max_stale deadline, ETag, discovered URL), so a reload
        during an IdP outage does not refuse every token while max_stale still allows the keys.
        Only from the same source: a changed jwks config, issuer or algorithm list starts empty.
        A copy, not the object: the old runtime closes its own tasks and HTTP client."""
        source = (self._cfg, self._issuer.issuer, self._issuer.algorithms, self._clock)
        if source != (old._cfg, old._issuer.issuer, old._issuer.algorithms, old._clock):
            return
        self._keys, self._fingerprints, self._etag = old._keys, old._fingerprints, old._etag
        self._jwks_url, self._rediscover = old._jwks_url, old._rediscover
        self._fresh_until, self._usable_until = old._fresh_until, old._usable_until
        self._next_attempt, self._distrusted = old._next_attempt, old._distrusted
        self._backoff.failures = old._backoff.failures

    async def start(self) -> None:
        """Load keys once at start-up (a failure here is not fatal: requests will retry), then
        keep them fresh: cached tokens never call find(), so without this loop a withdrawn key
        would go unnoticed for as long as its tokens stayed in the token cache."""
        await self._refresh_quietly()
        if self._cfg.inline is None:  # inline keys never change
            self._track(asyncio.ensure_future(self._keep_fresh()))

    async def _keep_fresh(self) -> None:
        while True:
            await self._sleep(max(self._next_wake() - self._clock(), MIN_REFRESH_WAIT))
            now = self._clock()
            if now >= self._fresh_until and now >= self._next_attempt:
                await self._refresh_quietly()  # one that fails past max_stale distrusts
            else:
                self._distrust_if_past_max_stale()

    def _next_wake(self) -> float:
        wake = max(self._fresh_until, self._next_attempt)
        # Cached tokens are dropped only when the generation moves: woken by the next attempt
        # alone, that came up to a backoff (60 s) past max_stale, cached tokens accepted
        # meanwhile. Once distrusted, only the next attempt can change anything.
        return wake if self._distrusted else min(wake, self._usable_until)

    async def find(self, key_id: str | None, algorithm: str) -> list[VerificationKey]:
        """Candidate keys: the one named by `kid`, or all of the algorithm when there is none."""
        now = self._clock()
        if now >= self._usable_until:
            await self._refresh_or_raise()
        elif now >= self._fresh_until:
            self._refresh_in_background()
        keys = self._lookup(key_id, algorithm)
        return keys or await self.refetched(key_id, algorithm) or []

    async def refetched(self, key_id: str | None, algorithm: str
                        ) -> list[VerificationKey] | None:
        """Candidates after a fetch begun since this call, for a key the set may not have yet
        (a new `kid`, a token without one that no known key verifies, or a known `kid` whose key
        may have been replaced); None when the per-interval bound allows no fetch now or the
        fetch fails (the issuer may have the key), [] for inline keys (they are all). A file is
        read again like a URL is fetched: rotation may have added the key to it."""
        if self._cfg.inline is not None:
            return []
        if not self._may_refetch_for_unknown_kid(self._clock()):
            return None
        try:
            await self._refresh_begun_now()
        except FetchFailed:
            return None
        return self._lookup(key_id, algorithm)

    async def _refresh_begun_now(self) -> None:
        # A fetch in flight may have left before the IdP published the key asked for, and then
        # brings back the document from before: joining it would spend the refetch on nothing,
        # and the caller would take its refusal as final (the rejected-token cache would keep
        # a valid token's bad_signature). Its outcome is waited out (two fetches at once could
        # end in the wrong order), then a fetch is joined or begun.
        earlier = self._inflight
        if earlier is None or earlier.done():
            await self.refresh()
            return
        # The wait and the fetch after it are one task of the key set's, awaited through a
        # shield: a Check cancelled meanwhile (Envoy's timeout is shorter than a fetch's) has
        # spent the refetch allowance, and the fetch it was for must still happen.
        refetch = asyncio.ensure_future(self._refresh_after(earlier))
        self._track(refetch)
        await asyncio.shield(refetch)

    async def _refresh_after(self, earlier: asyncio.Task[None]) -> None:
        await asyncio.wait((earlier,))
        if earlier.cancelled() or earlier.exception() is not None:
            raise FetchFailed("the fetch in flight failed")  # back off, as after any failure
        self._last_unknown_kid_fetch = self._clock()  # refetches begin an interval apart
        await self.refresh()

    def _lookup(self, key_id: str | None, algorithm: str) -> list[VerificationKey]:
        """The key with this id, or every key of the algorithm for a token without `kid`."""
        return [k for k in self._keys
                if k.algorithm == algorithm and (key_id is None or k.key_id == key_id)]

    def _may_refetch_for_unknown_kid(self, now: float) -> bool:
        # A flood of random kids must not become a flood of fetches: one per interval.
        if now - self._last_unknown_kid_fetch < self._cfg.refetch_interval:
            return False
        self._last_unknown_kid_fetch = now
        return True

    async def _refresh_or_raise(self) -> None:
        # With no usable keys every request would want a fetch: back off after a failure.
        if self._clock() < self._next_attempt:
            raise KeySetUnavailable(f"JWKS of {self._issuer.name} unavailable")
        try:
            await self.refresh()
        except FetchFailed:
            raise KeySetUnavailable(f"JWKS of {self._issuer.name} unavailable") from None

    def _refresh_in_background(self) -> None:
        # Also after a failed fetch: while stale keys still serve, an IdP that is down must
        # not get one fetch per request; nor one that marks its keys stale at once.
        now = self._clock()
        if now < self._next_attempt or now - self._last_fetch_started < MIN_REFRESH_WAIT:
            return
        if self._inflight is None or self._inflight.done():
            self._track(asyncio.ensure_future(self._refresh_quietly()))

    def _track(self, task: asyncio.Task[None]) -> None:
        self._background.add(task)  # held until done (the loop keeps only weak references)
        task.add_done_callback(self._settled)

    def _settled(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        # A refetch whose every waiter was cancelled (Envoy's timeout) ends with nobody to
        # retrieve its FetchFailed, which asyncio would log as a bug with a traceback; the
        # failure is counted and said by _fetch. Anything else is a bug: said as one.
        if not task.cancelled() and (exc := task.exception()) is not None \
                and not isinstance(exc, FetchFailed):
            log.error("JWKS task of %s failed", self._issuer.name, exc_info=exc)

    async def _refresh_quietly(self) -> None:
        # For the refreshes no Check waits on (start, the loop, a background refresh).
        try:
            await self.refresh()
        except FetchFailed:
            pass  # counted in metrics; stale keys keep serving
        except Exception:
            # A bug must neither fail the start nor end refreshing for good (withdrawn keys
            # would go unseen); the Checks that need a fetch meet it and fail closed.
            metrics.INTERNAL_ERRORS.inc()
            if self._loop_failing.ready():
                log.exception("JWKS refresh of %s failed; retrying", self._issuer.name)

    async def refresh(self) -> None:
        """Fetch now, sharing one in-flight fetch between all callers (single flight)."""
        if self._inflight is None or self._inflight.done():
            self._last_fetch_started = self._clock()
            self._inflight = asyncio.ensure_future(self._fetch())
        await asyncio.shield(self._inflight)

    async def _fetch(self) -> None:
        try:
            document, max_age = await self._load_document()
        except FetchFailed as exc:
            metrics.JWKS_FETCHES.labels(self._issuer.name, "error").inc()
            if self._fetch_failing.ready():
                log.warning("JWKS of %s could not be fetched: %s (said once a minute; "
                            "tenantgate_jwks_fetches_total counts each)", self._issuer.name, exc)
            self._next_attempt = self._clock() + self._backoff.next_delay()
            self._distrust_if_past_max_stale()
            raise
        except Exception:
            # A bug of ours: counted as an internal error by whoever awaited the fetch, and
            # not backed off (each Check meets it, not a relabelled 'unavailable'). The keys
            # still lose trust past max_stale: a fetch that keeps failing must not keep them.
            self._distrust_if_past_max_stale()
            raise
        self._distrusted = False
        self._backoff.reset()
        if document is not None:
            keys, _skipped = prepare(document, self._issuer.algorithms)
            self._keys = keys
            fingerprints = _fingerprints(document)
            if self._fingerprints - fingerprints:
                self.generation += 1  # a key is gone (or changed): cached tokens re-verify
            if fingerprints != self._fingerprints:
                self.revision += 1
            self._fingerprints = fingerprints
        metrics.JWKS_FETCHES.labels(self._issuer.name,
                                    "ok" if document is not None else "not_modified").inc()
        ttl = min(max(max_age if max_age is not None else self._cfg.default_ttl,
                      self._cfg.min_ttl), self._cfg.max_ttl)
        now = self._clock()
        self._fresh_until = now + ttl
        # Usable for MIN_REFRESH_WAIT at least: with ttl and max_stale 0 every Check would
        # wait for a fetch of its own.
        self._usable_until = now + max(ttl + self._cfg.max_stale, MIN_REFRESH_WAIT)

    def _distrust_if_past_max_stale(self) -> None:
        # find() refuses new tokens once the keys are past max_stale; tokens verified earlier
        # sit in the token cache, which never calls find(): moving the generation sends them
        # back to verification too. The refresh loop wakes at the deadline for this (or
        # fetches then, and this follows the fetch's failure).
        if self._distrusted or self._clock() < self._usable_until:
            return
        self._distrusted = True
        self.generation += 1
        log.warning("JWKS of %s not refreshed within max_stale: its keys are no longer "
                    "trusted, cached tokens included", self._issuer.name)

    async def _load_document(self) -> tuple[dict[str, Any] | None, float | None]:
        if self._cfg.inline is not None:
            return dict(self._cfg.inline), float("inf")
        if self._cfg.file is not None:
            return await asyncio.to_thread(_read_file, Path(self._cfg.file)), None
        if self._cfg.url is not None:
            return await self._get_jwks(self._cfg.url)
        url = await self._discovered_url()
        try:
            loaded = await self._get_jwks(url)
        except FetchFailed:
            # The IdP may have moved its keys (a new jwks_uri, the old one 404s): discover
            # again on the next attempt, after the backoff. Only after a failure: while the
            # URL works this costs no request, where discovering on every refresh doubles them.
            self._rediscover = True
            raise
        self._jwks_url, self._rediscover = url, False
        return loaded

    async def _discovered_url(self) -> str:
        if self._jwks_url is not None and not self._rediscover:
            return self._jwks_url
        try:
            url = await self._discover()
        except FetchFailed:
            if self._jwks_url is None:
                raise
            # Discovery down (or its document refused) says nothing about the keys: the URL
            # that last served them is still asked, or past max_stale every token gets 503.
            return self._jwks_url
        if url != self._jwks_url:
            self._etag = None  # an ETag is only good for its own URL
        return url

    async def _discover(self) -> str:
        url = self._issuer.issuer.rstrip("/") + "/.well-known/openid-configuration"
        # The document names the keys to trust: fetched over plain http, anyone on the path
        # could name their own (an https jwks_uri and the expected issuer pass every check).
        if not _scheme_ok(url, self._cfg):
            raise FetchFailed("issuer is not an https URL")
        _, body = await self._get(url, {})
        try:
            document = json.loads(body)
            jwks_uri = document["jwks_uri"]
        except (ValueError, KeyError, TypeError, RecursionError):
            raise FetchFailed("discovery document has no jwks_uri") from None
        # OpenID Connect Discovery 1.0, 4.3: the document's issuer MUST equal the one asked
        # about, or another issuer's keys could end up trusted for this one.
        if document.get("issuer") != self._issuer.issuer:
            raise FetchFailed("discovery document names another issuer")
        if not isinstance(jwks_uri, str) or not _scheme_ok(jwks_uri, self._cfg):
            raise FetchFailed("jwks_uri is not an https URL")
        return jwks_uri

    async def _get_jwks(self, url: str) -> tuple[dict[str, Any] | None, float | None]:
        headers = {"if-none-match": self._etag} if self._etag and self._keys else {}
        response, body = await self._get(url, headers)
        max_age = _freshness(response.headers)
        if response.status_code == 304:
            return None, max_age
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):  # deeply nested JSON exhausts the parser's stack
            raise FetchFailed("JWKS is not JSON") from None
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise FetchFailed("JWKS has no keys list")
        etag = response.headers.get("etag")
        # Sent back in If-None-Match: one httpx cannot encode would fail every later fetch.
        self._etag = etag if etag and etag.isascii() and etag.isprintable() else None
        return document, max_age

    async def _get(self, url: str, headers: dict[str, str]) -> tuple[httpx.Response, bytes]:
        """The response and its body, within one deadline and the size limit."""
        assert self._client is not None
        try:
            # httpx's timeout bounds each read, not the fetch: an endpoint dripping its body
            # would hold every Check waiting on this fetch. One deadline for the whole fetch.
            async with asyncio.timeout(self._cfg.timeout), self._client.stream(
                    "GET", url, headers=headers, timeout=self._cfg.timeout) as response:
                if response.status_code not in (200, 304):
                    raise FetchFailed(f"HTTP {response.status_code}")
                return response, await _read_bounded(response)
        # Not only HTTPError: a discovery document's jwks_uri may be any string, and httpx
        # raises InvalidURL, or a ValueError (UnicodeError: IDNA, encoding) for some before
        # sending; sockets and TLS may leak an OSError, the deadline is a TimeoutError.
        # Whatever an issuer's endpoint serves must fail that issuer's fetch only, never the
        # gateway's start or a Check (and a failure is what starts the backoff and the
        # max_stale clock). Anything else (httpx.StreamError included: a misuse of the
        # response) is a bug of ours, not the network's: it is not relabelled.
        except _NETWORK_ERRORS as exc:
            raise FetchFailed(type(exc).__name__) from None

    async def close(self) -> None:
        for task in (*self._background, self._inflight):
            if task is not None and not task.done():
                task.cancel()


async def _read_bounded(response: httpx.Response) -> bytes:
    # Read in pieces and stop past the limit: reading first and measuring after would hold
    # whatever the endpoint sends in memory (counted after content decoding: gzip bombs too).
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > MAX_JWKS_BYTES:
            raise FetchFailed("JWKS document too large")
    return bytes(body)


def _fingerprints(document: dict[str, Any]) -> frozenset[str]:
    """Each JWK as canonical JSON: a key whose entry disappears or changes is a removal."""
    entries = document.get("keys")
    found = set()
    for jwk in entries if isinstance(entries, list) else []:
        with contextlib.suppress(ValueError, TypeError, RecursionError):
            found.add(json.dumps(jwk, sort_keys=True))
    return frozenset(found)


def _scheme_ok(url: str, cfg: JwksConfig) -> bool:
    return url.startswith("https://") or (cfg.allow_insecure_http and url.startswith("http://"))


def _freshness(headers: httpx.Headers) -> float | None:
    """Seconds the response stays fresh, or None without max-age: max-age less the Age a cache
    on the way has already used up (RFC 9111 4.2.3; a CDN's max-age=3600 with Age: 3500 has
    100 s left). An Age that is not one whole number (malformed, or two of them) is ignored."""
    max_age = _max_age(headers.get("cache-control", ""))
    age = headers.get("age", "")
    if max_age is None or not _DELTA_SECONDS.fullmatch(age):
        return max_age
    return max(max_age - _delta_seconds(age), 0.0)


def _max_age(cache_control: str) -> float | None:
    # Directive names compared whole (a substring test took `x-no-cache-hint` for no-cache);
    # `no-cache="field"` still counts as no-cache, its value ignored.
    names = {d.split("=", 1)[0].strip().lower() for d in cache_control.split(",")}
    if not names.isdisjoint(("no-store", "no-cache")):
        return 0.0
    match = _MAX_AGE.search(cache_control)
    return _delta_seconds(match.group(1)) if match else None


def _delta_seconds(digits: str) -> float:
    # RFC 9111 1.2.2: a value past what the cache can hold counts as 2^31. Uncapped, a
    # 400-digit max-age and Age were inf - inf: NaN freshness, under which keys never expired.
    # float(), not int(): int() refuses more than 4300 digits.
    return min(float(digits), DELTA_SECONDS_CAP)


def _read_file(path: Path) -> dict[str, Any]:
    # Read on every refresh, so whatever is there later is read too, bounded: /dev/zero or a
    # huge file would fill memory, and a FIFO with no writer would block the fetch for good.
    try:
        return read_jwks_file(path)
    except ValueError as exc:
        raise FetchFailed(str(exc)) from None
