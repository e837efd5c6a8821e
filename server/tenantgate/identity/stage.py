"""The identity stage: a credential becomes an Identity (token cache first, then verification)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from tenantgate.decision import Deny, Reason
from tenantgate.observe import metrics

if TYPE_CHECKING:
    from tenantgate.pipeline import CheckState

_HIT = ("hit",)
_MISS = ("miss",)


def cached_identity(s: CheckState) -> bool:
    """The Identity of a bearer token verified before, straight from the cache (no await)."""
    assert s.credential is not None
    if s.credential.kind != "bearer":
        return False
    identity = s.runtime.token_cache.get(s.credential.cache_key, time.time())
    if identity is None:
        return False
    metrics.TOKEN_CACHE.inc(_HIT)
    s.identity = identity
    return True


async def identity_stage(s: CheckState) -> Deny | None:
    """An API key, or a bearer token that cached_identity did not find: verify it."""
    assert s.credential is not None
    rt = s.runtime
    if s.credential.kind == "api_key":
        if rt.api_keys is None:
            return Deny(Reason.API_KEY_INVALID)  # looks like any unknown key
        result = await rt.api_keys.verify(s.credential.value)
        if isinstance(result, Reason):
            return Deny(result)
        s.identity = result
        return None
    now = time.time()
    metrics.TOKEN_CACHE.inc(_MISS)
    verified = await rt.jwt.verify(s.credential.value, now)
    if isinstance(verified, Reason):
        return Deny(verified)
    rt.token_cache.put(s.credential.cache_key, verified, now, rt.keysets.get(verified.issuer))
    s.identity = verified
    return None
