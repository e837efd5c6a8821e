"""JWT verification: issuer by `iss`, algorithm from the issuer's allow-list, key by `kid`,
then the registered claims. Returns an Identity or the Reason it failed."""

from __future__ import annotations

import base64
import binascii
import json
import re
import unicodedata
from contextvars import ContextVar
from typing import Any, TypeGuard

from tenantgate.config.model import HMAC_ALGORITHMS, IssuerConfig
from tenantgate.context import utf8_encodable
from tenantgate.decision import Reason
from tenantgate.identity.jwks import KeySet
from tenantgate.identity.keys import VerificationKey, hmac_key
from tenantgate.identity.model import API_KEY_SUBJECT_PREFIX, NOT_A_STRING, Identity

# One C-speed check of the whole token's alphabet, so base64 decoding below need not re-check.
MAX_KIDLESS_KEYS = 4  # signature checks spent on one token that names no key
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
MAX_NUMERIC_DATE = 2**53  # far beyond any real date, exactly representable as a float
MAX_SUBJECT_CHARS = 255  # OpenID Connect Core: `sub` must not exceed 255 ASCII characters
# Whether the last verify() in this task (one Check) refused a signature that a refetch, refused
# by the rate limit or failed, might have accepted. Beside the result, not in it: verify() keeps
# the (token, now) -> Identity | Reason shape that tenantgate.testing.record_verifications wraps.
_REFETCH_MISSED: ContextVar[bool] = ContextVar("tenantgate_refetch_missed", default=False)


class _Malformed(Exception):
    pass


def _decode_segment(segment: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise _Malformed from None


# The last character of an unpadded base64url string also carries unused bits; only the
# spelling with those bits zero is canonical (RFC 4648 3.5). Refusing the others keeps one
# signature from having several spellings (tokens that differ but verify alike).
_CANONICAL_LAST = {2: frozenset("AQgw"), 3: frozenset("AEIMQUYcgkosw048")}


def _decode_signature(segment: str) -> bytes:
    allowed = _CANONICAL_LAST.get(len(segment) % 4)
    if allowed is not None and segment[-1] not in allowed:
        raise _Malformed
    return _decode_segment(segment)


def _decode_object(segment: str) -> dict[str, Any]:
    try:
        value = json.loads(_decode_segment(segment))
    except (ValueError, RecursionError):
        raise _Malformed from None
    if not isinstance(value, dict):
        raise _Malformed
    return value


def _is_number(value: object) -> TypeGuard[int | float]:
    # RFC 7519 NumericDate is a JSON number; PyJWT would accept "123" too, we do not.
    # Bounded and finite: NaN/Infinity (json accepts them) would never expire, and a
    # 400-digit integer overflows float arithmetic.
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and -MAX_NUMERIC_DATE < value < MAX_NUMERIC_DATE)


def claim_at(claims: dict[str, Any], path: str) -> object:
    """A claim by name, or by dotted path into nested objects (`org.tenant`)."""
    if path in claims:
        return claims[path]
    value: object = claims
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _strings(value: object, split: bool) -> frozenset[str]:
    if isinstance(value, str):
        # RFC 6749 §3.3: scopes are separated by a space, and no other character: str.split()
        # would also split at a no-break space or U+2028, so "read\u00a0admin" granted admin.
        return frozenset(v for v in value.split(" ") if v) if split else frozenset((value,))
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return frozenset(value)
    return frozenset()


class JwtVerifier:
    def __init__(self, issuers: list[IssuerConfig], keysets: dict[str, KeySet]) -> None:
        self._by_iss = {i.issuer: i for i in issuers}
        self._keysets = keysets
        self._hmac_keys = {
            (i.name, alg): hmac_key(i.hs_secret.value, alg)
            for i in issuers if i.hs_secret is not None
            for alg in i.algorithms if alg in HMAC_ALGORITHMS}

    async def verify(self, token: str, now: float) -> Identity | Reason:
        _REFETCH_MISSED.set(False)
        if not _COMPACT_JWS.fullmatch(token):
            return Reason.MALFORMED_TOKEN
        header_b64, payload_b64, signature_b64 = token.split(".")
        try:
            header = _decode_object(header_b64)
            claims = _decode_object(payload_b64)
            signature = _decode_signature(signature_b64)
        except _Malformed:
            return Reason.MALFORMED_TOKEN
        iss = claims.get("iss")
        issuer = self._by_iss.get(iss) if isinstance(iss, str) else None  # a list is unhashable
        if issuer is None:
            return Reason.UNKNOWN_ISSUER
        if reason := _header_problem(header, issuer):
            return reason
        keys = await self._keys_for(issuer, header)
        if not keys:
            return Reason.UNKNOWN_KEY
        signing_input = f"{header_b64}.{payload_b64}".encode("ascii")
        if not _verified(keys, signing_input, signature):
            if header["alg"] in HMAC_ALGORITHMS:
                return Reason.BAD_SIGNATURE
            # A key the IdP has just published looks like a bad signature: without a kid, or
            # under a kid whose key it replaced (RFC 7517 4.5: kids only SHOULD differ). The
            # unknown-kid refetch (one per interval, whatever the tokens say) is how it is
            # found before the next refresh; verified once more only when it ran.
            found = await self._keysets[issuer.name].refetched(header.get("kid"), header["alg"])
            if found is None:  # the issuer may have the key: this refusal is not final
                _REFETCH_MISSED.set(True)
                return Reason.BAD_SIGNATURE
            if not _verified(found, signing_input, signature):
                return Reason.BAD_SIGNATURE
        return _identity(issuer, header, claims, now)

    @staticmethod
    def refetch_missed() -> bool:
        """Whether the bad signature the last verify() of this task (one Check) returned might
        verify after a refetch that the rate limit refused or that failed: a retry must verify
        again (and so refetch), so the rejected-token cache must not remember it."""
        return _REFETCH_MISSED.get()

    async def _keys_for(self, issuer: IssuerConfig, header: dict[str, Any]
                        ) -> list[VerificationKey]:
        algorithm = header["alg"]
        if algorithm in HMAC_ALGORITHMS:
            hmac = self._hmac_keys.get((issuer.name, algorithm))
            return [hmac] if hmac is not None else []
        kid = header.get("kid")
        return await self._keysets[issuer.name].find(kid, algorithm)


def _verified(keys: list[VerificationKey], signing_input: bytes, signature: bytes) -> bool:
    # More than one candidate only for a token without `kid`, bounded by the JWKS size.
    return any(key.verify(signing_input, signature) for key in keys[:MAX_KIDLESS_KEYS])


def _header_problem(header: dict[str, Any], issuer: IssuerConfig) -> Reason | None:
    algorithm = header.get("alg")
    if not isinstance(algorithm, str) or algorithm not in issuer.algorithms:
        return Reason.ALGORITHM_NOT_ALLOWED  # includes "none": never in an allow-list
    if "crit" in header:
        return Reason.UNSUPPORTED_CRIT  # RFC 7515 4.1.11: we understand no extensions
    if "kid" in header and not isinstance(header["kid"], str):
        return Reason.MALFORMED_TOKEN
    if issuer.typ is not None and not _typ_matches(header.get("typ"), issuer.typ):
        return Reason.WRONG_TOKEN_TYPE
    return None


def _typ_matches(typ: object, wanted: str) -> bool:
    if not isinstance(typ, str):
        return False
    # RFC 7515 4.1.9: "application/" may be omitted; media types compare case-insensitively.
    return typ.lower().removeprefix("application/") == wanted.lower().removeprefix("application/")


def _identity(issuer: IssuerConfig, header: dict[str, Any], claims: dict[str, Any],
              now: float) -> Identity | Reason:
    if reason := _time_problem(issuer, claims, now):
        return reason
    audience = claims.get("aud")
    audiences = _strings(audience, split=False)
    if not audiences or audiences.isdisjoint(issuer.audiences):
        return Reason.WRONG_AUDIENCE
    subject = claims.get(issuer.subject_claim)
    if not _usable_subject(subject):
        return Reason.BAD_CLAIMS
    return Identity(
        issuer=issuer.name,
        subject=subject,
        tenant_claim=_tenant_claim(claim_at(claims, issuer.tenant_claim)),
        scopes=_strings(claim_at(claims, issuer.scope_claim), split=True),
        roles=_strings(claim_at(claims, issuer.roles_claim), split=False),
        key_id=str(header.get("kid", "")),
        expires_at=_acceptable_until(issuer, claims),
    )


def _usable_subject(subject: object) -> TypeGuard[str]:
    """A non-empty string of at most 255 characters (OpenID Connect's bound for `sub`) that
    UTF-8 can encode (a lone surrogate could not be written into headers or metadata), and
    not one of the subjects reserved for API keys."""
    return (isinstance(subject, str) and 0 < len(subject) <= MAX_SUBJECT_CHARS
            and utf8_encodable(subject) and not _reads_as_api_key_subject(subject))


def _reads_as_api_key_subject(subject: str) -> bool:
    # The subject header escapes a space at either end, but backends also read the exact
    # subject from the signed context, and code that trims it would take " apikey:<id>" for
    # that key's identity. Trims differ: str.strip() leaves U+FEFF and U+200B, JavaScript's
    # trim() drops U+FEFF, Java's String.trim() every character up to U+0020. So the prefix is
    # looked for past any leading control, format or separator character (a superset of them
    # all). Skipped, not refused: other subjects may begin with one of these.
    start = next((i for i, char in enumerate(subject) if not _trimmable(char)), len(subject))
    return subject.startswith(API_KEY_SUBJECT_PREFIX, start)


def _trimmable(char: str) -> bool:
    category = unicodedata.category(char)
    return char <= " " or category in ("Cc", "Cf") or category.startswith("Z")


def _acceptable_until(issuer: IssuerConfig, claims: dict[str, Any]) -> float:
    """When this token stops being accepted: its exp, or sooner when the issuer bounds the
    token's age (the token cache must not serve it past either)."""
    exp = float(claims["exp"])
    if issuer.max_token_age is None:
        return exp
    return min(exp, float(claims["iat"]) + issuer.max_token_age)  # iat is required then


def _time_problem(issuer: IssuerConfig, claims: dict[str, Any], now: float) -> Reason | None:
    exp, nbf, iat = claims.get("exp"), claims.get("nbf"), claims.get("iat")
    # exp is required; all three must be JSON numbers (RFC 7519 NumericDate) when present, so
    # `"nbf": null` is refused like any other non-number, not read as an absent nbf.
    if not _is_number(exp) or any(name in claims and not _is_number(claims[name])
                                  for name in ("nbf", "iat")):
        return Reason.BAD_CLAIMS
    leeway = issuer.leeway
    if now >= exp + leeway:
        return Reason.TOKEN_EXPIRED
    if nbf is not None and now + leeway < nbf:
        return Reason.TOKEN_NOT_YET_VALID
    if iat is not None and iat > now + leeway:
        return Reason.TOKEN_ISSUED_IN_FUTURE
    if issuer.max_token_age is not None and (iat is None or now - iat > issuer.max_token_age):
        return Reason.TOKEN_TOO_OLD
    return None


def _tenant_claim(value: object) -> object:
    # Tenancy refuses any claim that is not a string; keeping a list or object claim would let
    # signed tokens fill the token cache far past its byte bound (it counts str(claim)).
    return value if value is None or isinstance(value, str) else NOT_A_STRING
