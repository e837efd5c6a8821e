"""The verified-token cache: bounded by entries and bytes, never past the token's exp."""

from __future__ import annotations

import json
import tracemalloc

import pytest
from tenantgate.identity.model import Identity
from tenantgate.identity.token_cache import TokenCache, token_key

NOW = 1_800_000_000.0


def identity(n: int = 0, expires_at: float | None = NOW + 300) -> Identity:
    return Identity(issuer="idp", subject=f"user-{n}", tenant_claim="acme",
                    scopes=frozenset({"notes:read", "notes:write"}), roles=frozenset({"admin"}),
                    key_id="k1", expires_at=expires_at)


def test_hit_returns_the_identity_and_miss_returns_none() -> None:
    cache = TokenCache(10, 1 << 20)
    cache.put(token_key("t1"), identity(1), NOW)
    assert cache.get(token_key("t1"), NOW) == identity(1)
    assert cache.get(token_key("t2"), NOW) is None


def test_key_is_a_digest_not_the_token() -> None:
    token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"
    assert token.encode() not in token_key(token) and len(token_key(token)) == 32


def test_entry_never_outlives_exp() -> None:
    cache = TokenCache(10, 1 << 20)
    cache.put(token_key("t"), identity(expires_at=NOW + 5), NOW)
    assert cache.get(token_key("t"), NOW + 4.999) is not None
    assert cache.get(token_key("t"), NOW + 5) is None
    assert len(cache) == 0 and cache.size_bytes == 0  # the expired entry is gone


class Keys:
    """An issuer's key set as the cache sees it: a generation that moves when a key goes."""

    def __init__(self) -> None:
        self.generation = 3


def test_entry_is_dropped_once_the_keys_that_verified_it_lost_a_key() -> None:
    cache, keys, other = TokenCache(10, 1 << 20), Keys(), Keys()
    cache.put(token_key("t"), identity(1), NOW, keys)
    cache.put(token_key("u"), identity(2), NOW, other)
    cache.put(token_key("h"), identity(3), NOW)  # no key set: an HMAC secret, say
    assert cache.get(token_key("t"), NOW) == identity(1)
    keys.generation += 1
    assert cache.get(token_key("t"), NOW) is None  # verified again from now on
    assert len(cache) == 2
    assert cache.get(token_key("u"), NOW) == identity(2)  # another issuer's keys: untouched
    assert cache.get(token_key("h"), NOW) == identity(3)


@pytest.mark.parametrize("expires_at", [None, NOW, NOW - 1], ids=["no-exp", "at-exp", "past"])
def test_token_without_future_exp_is_not_cached(expires_at: float | None) -> None:
    cache = TokenCache(10, 1 << 20)
    cache.put(token_key("t"), identity(expires_at=expires_at), NOW)
    assert len(cache) == 0


def test_zero_entries_disables_the_cache() -> None:
    cache = TokenCache(0, 1 << 20)
    cache.put(token_key("t"), identity(), NOW)
    assert cache.get(token_key("t"), NOW) is None


def test_least_recently_used_is_evicted_first() -> None:
    cache = TokenCache(2, 1 << 20)
    cache.put(token_key("a"), identity(1), NOW)
    cache.put(token_key("b"), identity(2), NOW)
    cache.get(token_key("a"), NOW)  # a is now the most recent
    cache.put(token_key("c"), identity(3), NOW)
    assert cache.get(token_key("b"), NOW) is None
    assert cache.get(token_key("a"), NOW) is not None and cache.get(token_key("c"), NOW)


def test_entry_larger_than_the_byte_bound_is_not_cached() -> None:
    cache = TokenCache(10, 2000)
    huge = Identity("idp", "x" * 5000, "acme", frozenset(), frozenset(), "k1", NOW + 60)
    cache.put(token_key("t"), huge, NOW)
    assert len(cache) == 0 and cache.size_bytes == 0


def test_putting_the_same_token_twice_counts_it_once() -> None:
    cache = TokenCache(10, 1 << 20)
    cache.put(token_key("t"), identity(), NOW)
    size = cache.size_bytes
    cache.put(token_key("t"), identity(), NOW)
    assert len(cache) == 1 and cache.size_bytes == size


@pytest.mark.parametrize("max_entries, max_bytes", [(5_000, 1 << 30), (1 << 30, 2_000_000)],
                         ids=["entry-bound", "byte-bound"])
def test_flood_of_200k_unique_tokens_keeps_both_bounds(max_entries: int, max_bytes: int) -> None:
    cache = TokenCache(max_entries, max_bytes)
    peak_entries = peak_bytes = 0
    for n in range(200_000):
        cache.put(token_key(f"token-{n}"), identity(n), NOW)
        if n % 997 == 0:
            peak_entries, peak_bytes = max(peak_entries, len(cache)), max(peak_bytes,
                                                                           cache.size_bytes)
    assert max(peak_entries, len(cache)) <= max_entries
    assert max(peak_bytes, cache.size_bytes) <= max_bytes
    assert cache.get(token_key("token-199999"), NOW) is not None  # the newest survived


@pytest.mark.parametrize("scopes, subject", [
    ("notes:read notes:write", "user-"),
    (" ".join(f"scope-{i}:read" for i in range(30)), "user-"),
    ("notes:read", "\u00fcser-\u6f22\u5b57-\U0001f600-"),
], ids=["two-scopes", "thirty-scopes", "non-ascii-subject"])
def test_accounted_bytes_cover_the_real_memory_of_the_entries(scopes: str,
                                                               subject: str) -> None:
    # The byte bound is only a bound if each entry's estimate is at least its real cost.
    # Identities are built as the verifier builds them: fresh strings and sets per token.
    cache = TokenCache(100_000, 1 << 30)
    template = json.dumps({"sub": subject + "%d", "tenant_id": "tenant-%d", "scope": scopes,
                           "roles": ["admin", "editor"], "kid": "key-2026-%d"})
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for n in range(10_000):
        claims = json.loads(template % (n, n, n))
        cache.put(token_key(f"token-{n}"), Identity(
            issuer="idp", subject=claims["sub"], tenant_claim=claims["tenant_id"],
            scopes=frozenset(claims["scope"].split()), roles=frozenset(claims["roles"]),
            key_id=claims["kid"], expires_at=NOW + 300), NOW)
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert grown <= cache.size_bytes, f"{grown / 10_000:.0f} B per entry really used"
