"""The signed tenant context: a compact HS256 JWS that backends and Postgres verify.

Wire format (documented in docs/signed-context.md, verified by tenantgate.current_tenant()):

    base64url(header) "." base64url(payload) "." base64url(HMAC-SHA256(key, first two parts))

header  = {"alg":"HS256","kid":<key id>,"typ":"tenant-context"}
payload = {"tenant":<id>,"sub":<subject>,"iat":<int>,"exp":<int>,"rid":<request id>}

JSON is compact (no spaces); base64url has no padding. Backends import this module alone.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
import time
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii

ALGORITHM = "HS256"
TYPE = "tenant-context"
MIN_KEY_BYTES = 32
# What a key id (the header's kid) may be: the rule of ContextKey.id in the config, of `db
# add-key` and of the key table's CHECK and tenantgate._valid_key_id() in Postgres
# (tests/integration/postgres/test_key_id_checks.py holds them together). fullmatch, not `$`:
# Python's `$` also matches before a final newline.
_KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")
KEY_ID_RULE = "must be 1 to 32 characters, each a letter A-Z or a-z, a digit, _ or -"
MAX_CONTEXT_BYTES = 4096
# How far in the future a context's `iat` may lie, by the verifier's clock, before it is refused:
# the same allowance as Postgres's verifier (sql/006_issued_at_check.sql). Without it a verifier
# whose clock runs behind the signer's accepted a context for the TTL plus the lag, however old.
# 30 s, as the default JWT `leeway`: far above what NTP-synced clocks drift apart, and half the
# default TTL, so no context is accepted for longer than its TTL plus 30 s, whatever the skew.
CLOCK_SKEW_SECONDS = 30
# docs/signed-context.md step 1, as the SQL verifier checks it: base64url in three non-empty
# parts, the last a 43-character HMAC-SHA256 in its canonical spelling (its last character's two
# unused bits zero). What sign() writes, and nothing a database driver would choke on (a NUL).
CONTEXT_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]")


def key_id_problem(key_id: str) -> str | None:
    """KEY_ID_RULE when `key_id` breaks it, else None."""
    return None if _KEY_ID.fullmatch(key_id) else KEY_ID_RULE


@dataclass(frozen=True, slots=True)
class ContextClaims:
    tenant: str
    subject: str
    issued_at: int
    expires_at: int
    request_id: str
    key_id: str


class InvalidContext(ValueError):
    """The context is missing, malformed, signed with an unknown key, forged, expired or issued
    in the future (beyond CLOCK_SKEW_SECONDS)."""


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def b64url(data: bytes) -> str:
    return b64url_bytes(data).decode()


def b64url_bytes(data: bytes) -> bytes:
    # base64.urlsafe_b64encode without its two Python-level wrappers: this runs twice per Check.
    # The trailing newline goes with the padding: `newline=False` costs a keyword-argument
    # parse, more than stripping one more byte.
    return binascii.b2a_base64(data).translate(_URLSAFE).rstrip(b"=\n")


def b64url_decode(text: str) -> bytes:
    if "=" in text or "+" in text or "/" in text:
        raise InvalidContext("not base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise InvalidContext("not base64url") from None
    # The decoder ignores unused trailing bits (and stray characters): accept only the one
    # canonical spelling, as the SQL verifier must, so a context has exactly one valid form.
    if b64url(data) != text:
        raise InvalidContext("not base64url")
    return data


_quote = encode_basestring_ascii  # a JSON string literal, non-ASCII escaped


def _json(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=True).encode()


_SHA256_BLOCK_BYTES = 64


class _SigningKey:
    __slots__ = ("_inner", "_outer", "header_b64", "inner_after_header", "key_id")

    def __init__(self, key_id: str, secret: bytes) -> None:
        if len(secret) < MIN_KEY_BYTES:
            raise ValueError(f"context key {key_id!r} must be at least {MIN_KEY_BYTES} bytes")
        self.key_id = key_id
        # HMAC-SHA256 as RFC 2104 defines it, with both keyed hash states computed once:
        # copying two hashlib states is a third of the cost of hmac.HMAC.copy(), whose
        # Python-level wrapper runs on every Check. tests/unit/test_context.py compares it
        # with the stdlib's hmac for short, block-sized and long keys.
        if len(secret) > _SHA256_BLOCK_BYTES:
            secret = hashlib.sha256(secret).digest()
        secret = secret.ljust(_SHA256_BLOCK_BYTES, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in secret))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in secret))
        self.header_b64 = b64url(_json({"alg": ALGORITHM, "kid": key_id, "typ": TYPE}))
        # Every context this key signs starts with the same header: hash it once.
        self.inner_after_header = self._inner.copy()
        self.inner_after_header.update(f"{self.header_b64}.".encode("ascii"))

    def signature(self, signing_input: bytes) -> bytes:
        return self.mac(self._inner, signing_input)

    def mac(self, inner_start: hashlib._Hash, rest: bytes) -> bytes:
        """HMAC-SHA256 of what `inner_start` has hashed (`_inner`: nothing yet, or
        `inner_after_header`: the header and its dot) followed by `rest`."""
        inner = inner_start.copy()
        inner.update(rest)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


class KeyRing:
    """One active signing key plus older keys that are still accepted when verifying."""

    def __init__(self, keys: dict[str, bytes], active_key_id: str) -> None:
        if active_key_id not in keys:
            raise ValueError(f"active key {active_key_id!r} is not in the ring")
        self._keys = {kid: _SigningKey(kid, secret) for kid, secret in keys.items()}
        self._active = self._keys[active_key_id]

    def sign(self, tenant: str, subject: str, request_id: str, ttl: float,
             now: float | None = None) -> str:
        return self.sign_after(payload_prefix(tenant, subject), request_id, ttl, now)

    def sign_after(self, prefix: str, request_id: str, ttl: float,
                   now: float | None = None) -> str:
        """sign() with the payload's first claims already quoted by payload_prefix(): they
        repeat for every Check of one tenant and subject."""
        now = time.time() if now is None else now
        # exp rounded up: a context lives at least `ttl` (rounded down it lost up to a second).
        # Same bytes as _json() of the payload dict, without building and walking a dict.
        payload = (f'{prefix}{int(now)},"exp":{math.ceil(now + ttl)},'
                   f'"rid":{_quote(request_id)}}}')
        key = self._active
        payload_b64 = b64url_bytes(payload.encode("ascii"))
        signature = b64url_bytes(key.mac(key.inner_after_header, payload_b64))
        return f"{key.header_b64}.{payload_b64.decode()}.{signature.decode()}"

    def verify(self, token: str, now: float | None = None) -> ContextClaims:
        """Return the claims of a valid context or raise InvalidContext (never anything else)."""
        if not token or len(token) > MAX_CONTEXT_BYTES or not token.isascii():
            raise InvalidContext("malformed")
        parts = token.split(".")
        if len(parts) != 3:
            raise InvalidContext("malformed")
        header = _load_object(parts[0])
        kid = header.get("kid")
        key = self._keys.get(kid) if isinstance(kid, str) else None  # a list kid is unhashable
        if header.get("alg") != ALGORITHM or key is None:
            raise InvalidContext("unknown key or algorithm")
        expected = key.signature(f"{parts[0]}.{parts[1]}".encode("ascii"))
        if not hmac.compare_digest(expected, b64url_decode(parts[2])):
            raise InvalidContext("bad signature")
        return _claims(_load_object(parts[1]), key.key_id,
                       time.time() if now is None else now)


def payload_prefix(tenant: str, subject: str) -> str:
    """The payload up to the issue time: `{"tenant":...,"sub":...,"iat":`."""
    return f'{{"tenant":{_quote(tenant)},"sub":{_quote(subject)},"iat":'


def _load_object(part: str) -> dict[str, object]:
    # UTF-8 text only, as Postgres' verify_context reads it: json.loads(bytes) would also
    # take UTF-16/32 (and json.loads(str) a lone-surrogate escape), which Postgres refuses.
    try:
        value = json.loads(b64url_decode(part).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise InvalidContext("malformed") from None
    if not isinstance(value, dict) or not utf8_json(value):
        raise InvalidContext("malformed")
    return value


def utf8_encodable(text: str) -> bool:
    """False for a string holding a lone surrogate (what a JSON `\\ud800` escape, or argv bytes
    Python could not decode, become): no header, log line, protobuf or Postgres text carries
    one. Here, beside the context, because backends import this module and nothing else."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def utf8_json(value: object) -> bool:
    """Every string of a decoded JSON value, object keys included, is utf8_encodable."""
    if isinstance(value, str):
        return utf8_encodable(value)
    if isinstance(value, dict):
        return all(utf8_json(k) and utf8_json(v) for k, v in value.items())
    if isinstance(value, list):
        return all(utf8_json(v) for v in value)
    return True


def _claims(payload: dict[str, object], key_id: str, now: float) -> ContextClaims:
    tenant, subject, rid = payload.get("tenant"), payload.get("sub"), payload.get("rid")
    iat, exp = payload.get("iat"), payload.get("exp")
    if not (isinstance(tenant, str) and tenant and isinstance(subject, str)
            and isinstance(rid, str) and type(iat) is int and type(exp) is int):
        raise InvalidContext("malformed claims")
    if now >= exp:
        raise InvalidContext("expired")
    if iat > now + CLOCK_SKEW_SECONDS:
        raise InvalidContext("issued in the future")
    return ContextClaims(tenant, subject, iat, exp, rid, key_id)
