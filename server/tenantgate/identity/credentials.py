"""The credential stage: exactly one of `Authorization: Bearer <jwt>` or the API-key header."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from tenantgate.decision import Deny, Reason
from tenantgate.identity.token_cache import token_key

if TYPE_CHECKING:
    from tenantgate.pipeline import CheckState


@dataclass(slots=True)  # not frozen: built per Check (see quota.store.BucketState)
class Credential:
    kind: Literal["bearer", "api_key"]
    value: str
    cache_key: bytes = b""  # a bearer token's token-cache key, hashed once per Check


def credential_stage(s: CheckState) -> Deny | None:
    creds = s.runtime.config.credentials
    authorization = s.request.authorization
    api_key = s.request.headers.get(creds.api_key_header)
    if authorization is not None and api_key is not None:
        return Deny(Reason.MULTIPLE_CREDENTIALS)
    if authorization is None and api_key is None:
        return Deny(Reason.NO_CREDENTIAL)
    if api_key is not None:
        if not api_key or len(api_key) > creds.max_token_bytes:
            return Deny(Reason.API_KEY_INVALID)
        s.credential = Credential("api_key", api_key)
        return None
    assert authorization is not None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    # Non-ASCII can arrive through the raw header map; it is never part of a JWT.
    if scheme.lower() != "bearer" or not token or " " in token or not token.isascii():
        return Deny(Reason.MALFORMED_TOKEN)
    if len(token) > creds.max_token_bytes:
        return Deny(Reason.TOKEN_TOO_LARGE)
    s.credential = Credential("bearer", token, token_key(token))
    return None
