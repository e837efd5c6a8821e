"""The identity stage: a credential becomes an Identity (token cache first, then the
rejected-token cache, then verification)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from tenantgate.decision import Deny, Reason
from tenantgate.identity.apikeys import KeyRefusal
from tenantgate.observe import metrics

if TYPE_CHECKING:
    from tenantgate.pipeline import CheckState

_HIT = ("hit",)
_MISS = ("miss",)
_REJECTED_HIT = ("rejected_hit",)


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
        result = await rt.api_keys.check(s.credential.value, s.request.request_id)
        if isinstance(result, KeyRefusal):
            s.refused_key = result.record
            return Deny(result.reason)
        s.identity = result
        return None
    now = time.time()  # wall time, as a token's exp, nbf and iat are
    key = s.credential.cache_key
    if (rejected := rt.rejected_tokens.get(key)) is not None:
        metrics.TOKEN_CACHE.inc(_REJECTED_HIT)
        return Deny(rejected)  # the same reason as the first time: audit and metrics agree
    metrics.TOKEN_CACHE.inc(_MISS)
    keys_revision = rt.rejected_tokens.keys_revision()
    verified = await rt.jwt.verify(s.credential.value, now)
    if isinstance(verified, Reason):
        # Kept only if time cannot fix the reason, no key changed while verifying, and no
        # refetch that might have found this token's key was refused or failed.
        rt.rejected_tokens.put(key, verified, keys_revision, rt.jwt.refetch_missed())
        return Deny(verified)
    rt.token_cache.put(key, verified, now, rt.keysets.get(verified.issuer))
    s.identity = verified
    return None
