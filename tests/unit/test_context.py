"""The signed tenant context: sign/verify, key-ring rotation, and garbage that must only ever
raise InvalidContext."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import string

import pytest
from tenantgate.context import (
    CLOCK_SKEW_SECONDS,
    MAX_CONTEXT_BYTES,
    InvalidContext,
    KeyRing,
    b64url,
    payload_prefix,
)

OLD, NEW = b"o" * 32, b"n" * 32
NOW = 1_800_000_000


def _b64(obj: object) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def _resign(ring_secret: bytes, header: object, payload: object) -> str:
    signing_input = f"{_b64(header)}.{_b64(payload)}"
    mac = hmac.new(ring_secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


@pytest.fixture
def ring() -> KeyRing:
    return KeyRing({"old": OLD, "new": NEW}, "new")


def test_signed_context_verifies_with_all_claims(ring: KeyRing) -> None:
    token = ring.sign("acme", "user-1", "req-9", 60, now=NOW)
    claims = ring.verify(token, now=NOW + 1)
    assert (claims.tenant, claims.subject, claims.request_id, claims.key_id) == (
        "acme", "user-1", "req-9", "new")
    assert (claims.issued_at, claims.expires_at) == (NOW, NOW + 60)


def test_wire_format_is_compact_hs256_jws_with_kid_and_typ(ring: KeyRing) -> None:
    header_b64, payload_b64, signature_b64 = ring.sign("acme", "u", "r", 60, now=NOW).split(".")
    pad = lambda s: s + "=" * (-len(s) % 4)  # noqa: E731
    assert json.loads(base64.urlsafe_b64decode(pad(header_b64))) == {
        "alg": "HS256", "kid": "new", "typ": "tenant-context"}
    payload = base64.urlsafe_b64decode(pad(payload_b64))
    assert payload == b'{"tenant":"acme","sub":"u","iat":1800000000,"exp":1800000060,"rid":"r"}'
    assert "=" not in signature_b64 and len(base64.urlsafe_b64decode(pad(signature_b64))) == 32


@pytest.mark.parametrize("secret", [b"s" * 32, bytes(range(64)), bytes(range(65)),
                                    b"\xff" * 200])
def test_signature_is_the_stdlib_hmac_sha256_for_any_key_length(secret: bytes) -> None:
    # The signer computes HMAC from two precomputed SHA-256 states (RFC 2104): a key longer
    # than the 64-byte block is hashed first, a shorter one padded with zeros.
    token = KeyRing({"k": secret}, "k").sign("acme", "user-1", "req-1", 60, now=NOW)
    signing_input, _, signature = token.rpartition(".")
    expected = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    assert signature == b64url(expected)


def test_sign_after_a_payload_prefix_is_sign(ring: KeyRing) -> None:
    prefix = payload_prefix("acme", 'us"er')
    assert ring.sign_after(prefix, "r", 60, now=NOW) == ring.sign("acme", 'us"er', "r", 60,
                                                                   now=NOW)


def test_old_key_still_verifies_after_rotation() -> None:
    before = KeyRing({"old": OLD}, "old").sign("acme", "u", "r", 60, now=NOW)
    rotated = KeyRing({"old": OLD, "new": NEW}, "new")
    assert rotated.verify(before, now=NOW).key_id == "old"
    assert rotated.verify(rotated.sign("acme", "u", "r", 60, now=NOW), now=NOW).key_id == "new"


def test_removed_key_no_longer_verifies() -> None:
    before = KeyRing({"old": OLD}, "old").sign("acme", "u", "r", 60, now=NOW)
    with pytest.raises(InvalidContext, match="unknown key"):
        KeyRing({"new": NEW}, "new").verify(before, now=NOW)


def test_same_kid_with_another_secret_is_a_bad_signature() -> None:
    forged = KeyRing({"new": b"f" * 32}, "new").sign("acme", "u", "r", 60, now=NOW)
    with pytest.raises(InvalidContext, match="bad signature"):
        KeyRing({"new": NEW}, "new").verify(forged, now=NOW)


def test_expired_context_is_rejected_at_exp(ring: KeyRing) -> None:
    token = ring.sign("acme", "u", "r", 60, now=NOW)
    ring.verify(token, now=NOW + 59.9)
    with pytest.raises(InvalidContext, match="expired"):
        ring.verify(token, now=NOW + 60)


def test_context_issued_beyond_the_clock_skew_allowance_is_rejected(ring: KeyRing) -> None:
    # A verifier whose clock runs behind the signer's: a context signed an hour ahead (with a
    # TTL long enough that exp alone lets it through) was accepted for the TTL plus the lag.
    token = ring.sign("acme", "u", "r", 7200, now=NOW + 3600)
    with pytest.raises(InvalidContext, match="issued in the future"):
        ring.verify(token, now=NOW)
    with pytest.raises(InvalidContext, match="issued in the future"):
        ring.verify(ring.sign("acme", "u", "r", 60, now=NOW), now=NOW - CLOCK_SKEW_SECONDS - 0.5)
    # Within the allowance (a clock a little behind) it verifies.
    assert ring.verify(token, now=NOW + 3600 - CLOCK_SKEW_SECONDS).tenant == "acme"


def test_ttl_below_one_second_still_gives_a_positive_lifetime(ring: KeyRing) -> None:
    claims = ring.verify(ring.sign("acme", "u", "r", 0.2, now=NOW), now=NOW)
    assert claims.expires_at == NOW + 1


def test_tampered_payload_is_rejected(ring: KeyRing) -> None:
    header, _, signature = ring.sign("acme", "u", "r", 60, now=NOW).split(".")
    other = _b64({"tenant": "globex", "sub": "u", "iat": NOW, "exp": NOW + 60, "rid": "r"})
    with pytest.raises(InvalidContext, match="bad signature"):
        ring.verify(f"{header}.{other}.{signature}", now=NOW)


@pytest.mark.parametrize("position", [0, 10, 42], ids=["first", "middle", "last"])
def test_every_signature_character_matters(ring: KeyRing, position: int) -> None:
    # The last base64url character of a 32-byte MAC carries 2 unused bits: a lax decoder
    # accepts 4 spellings of one signature. A context must have exactly one valid spelling.
    header, payload, signature = ring.sign("acme", "u", "r", 60, now=NOW).split(".")
    for replacement in string.ascii_letters + string.digits + "-_":
        if replacement == signature[position]:
            continue
        changed = signature[:position] + replacement + signature[position + 1:]
        with pytest.raises(InvalidContext):
            ring.verify(f"{header}.{payload}.{changed}", now=NOW)


@pytest.mark.parametrize("header", [
    {"alg": "none", "kid": "new"},
    {"alg": "HS512", "kid": "new"},
    {"alg": "HS256"},
    {"alg": "HS256", "kid": "nope"},
    {"alg": "HS256", "kid": ["new"]},
    {"alg": "HS256", "kid": {"a": 1}},
    {"alg": ["HS256"], "kid": "new"},
], ids=["alg-none", "alg-hs512", "no-kid", "unknown-kid", "kid-list", "kid-object", "alg-list"])
def test_header_other_than_hs256_with_a_known_kid_is_rejected(ring: KeyRing,
                                                               header: object) -> None:
    payload = {"tenant": "acme", "sub": "u", "iat": NOW, "exp": NOW + 60, "rid": "r"}
    with pytest.raises(InvalidContext):
        ring.verify(_resign(NEW, header, payload), now=NOW)


@pytest.mark.parametrize("payload", [
    {"sub": "u", "iat": NOW, "exp": NOW + 60, "rid": "r"},
    {"tenant": "", "sub": "u", "iat": NOW, "exp": NOW + 60, "rid": "r"},
    {"tenant": ["acme"], "sub": "u", "iat": NOW, "exp": NOW + 60, "rid": "r"},
    {"tenant": "acme", "sub": "u", "iat": NOW, "exp": str(NOW + 60), "rid": "r"},
    {"tenant": "acme", "sub": "u", "iat": NOW, "exp": float(NOW + 60), "rid": "r"},
    {"tenant": "acme", "sub": "u", "iat": NOW, "exp": True, "rid": "r"},
    {"tenant": "acme", "sub": "u", "iat": NOW, "exp": NOW + 60},
    ["acme"],
], ids=["no-tenant", "empty-tenant", "list-tenant", "string-exp", "float-exp", "bool-exp",
        "no-rid", "array-payload"])
def test_correctly_signed_but_malformed_claims_are_rejected(ring: KeyRing,
                                                           payload: object) -> None:
    header = {"alg": "HS256", "kid": "new", "typ": "tenant-context"}
    with pytest.raises(InvalidContext):
        ring.verify(_resign(NEW, header, payload), now=NOW)


def _resign_bytes(secret: bytes, header: object, payload: bytes) -> str:
    signing_input = f"{_b64(header)}.{b64url(payload)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


CLAIMS = '"tenant":"acme","sub":"u","iat":1800000000,"exp":1800000060,"rid":"r"'


@pytest.mark.parametrize("payload", [
    ("{" + CLAIMS + "}").encode("utf-16"),  # json.loads(bytes) detects UTF-16 and 32
    ("{" + CLAIMS + "}").encode("utf-32-le"),
    b"\xef\xbb\xbf" + ("{" + CLAIMS + "}").encode(),  # a UTF-8 byte order mark
    (b'{"tenant":"acme","sub":"u\\ud800","iat":1800000000,"exp":1800000060,"rid":"r"}'
     ),  # a lone surrogate, which no UTF-8 text (or Postgres text) can hold
], ids=["utf-16", "utf-32", "bom", "lone-surrogate"])
def test_payload_encodings_postgres_refuses_are_refused_here_too(
        ring: KeyRing, payload: bytes) -> None:
    # One context, one verdict: tenantgate.verify_context() in Postgres reads the payload as
    # UTF-8 JSON text only, so the Python verifier must not accept more.
    token = _resign_bytes(NEW, {"alg": "HS256", "kid": "new", "typ": "tenant-context"}, payload)
    with pytest.raises(InvalidContext):
        ring.verify(token, now=NOW)


@pytest.mark.parametrize("token", [
    "", ".", "..", "a.b", "a.b.c.d", "x" * (MAX_CONTEXT_BYTES + 1), "é.é.é",
    "eyJ.eyJ.sig", "!!!.!!!.!!!", "a=.b.c", "+/+.a.b", "\x00.\x00.\x00", " . . ",
], ids=repr)
def test_garbage_raises_only_invalid_context(ring: KeyRing, token: str) -> None:
    with pytest.raises(InvalidContext):
        ring.verify(token, now=NOW)


def test_truncated_context_is_rejected_at_every_length(ring: KeyRing) -> None:
    token = ring.sign("acme", "user-1", "req-1", 60, now=NOW)
    for length in range(len(token)):
        with pytest.raises(InvalidContext):
            ring.verify(token[:length], now=NOW)


def test_random_mutations_raise_only_invalid_context(ring: KeyRing) -> None:
    # A cheap fuzz (seeded, so a failure reproduces): flips, insertions and deletions of
    # characters from the base64url alphabet and beyond. Nothing but InvalidContext may escape.
    rng = random.Random(20260101)
    token = ring.sign("acme", "user-1", "req-1", 60, now=NOW)
    alphabet = "ABCxyz019-_.=+/!\x00é{}\"[]"
    for _ in range(3000):
        chars = list(token)
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(chars))
            op = rng.randrange(3)
            if op == 0:
                chars[i] = rng.choice(alphabet)
            elif op == 1:
                chars.insert(i, rng.choice(alphabet))
            elif len(chars) > 1:
                del chars[i]
        mutated = "".join(chars)
        if mutated == token:
            continue
        with pytest.raises(InvalidContext):
            ring.verify(mutated, now=NOW)


def test_key_ring_refuses_short_secrets_and_unknown_active_key() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        KeyRing({"k": b"short"}, "k")
    with pytest.raises(ValueError, match="not in the ring"):
        KeyRing({"k": NEW}, "other")


@pytest.mark.parametrize("now", [NOW, NOW + 0.001, NOW + 0.999])
def test_a_context_lives_at_least_its_ttl(ring: KeyRing, now: float) -> None:
    # exp was int(now) + ttl: signed at x.999 s, a context lost almost a second of its life.
    claims = ring.verify(ring.sign("acme", "u", "r", 60, now=now), now=now + 59.999)
    assert claims.expires_at >= now + 60
