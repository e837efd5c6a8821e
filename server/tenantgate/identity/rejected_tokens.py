"""The rejected-token cache: digests of bearer tokens refused for a reason that cannot change
under this runtime, so a retried or replayed token is refused again without a signature check."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Protocol

from tenantgate.decision import Reason

# Cached: what only a new config (a new Runtime, so a new cache) or a change of an issuer's
# keys (which empties the cache) could turn into an accept. Expired and too-old tokens only
# get older; the claim reasons are reached only past the signature check; BAD_SIGNATURE unless
# the refetch for that token was refused or failed (JwtVerifier.refetch_missed). Not cached:
# UNKNOWN_KEY (the issuer may publish the key: the refetch for unknown kids must still run),
# TOKEN_NOT_YET_VALID and TOKEN_ISSUED_IN_FUTURE (time alone fixes them).
PERMANENT_REASONS = frozenset({
    Reason.MALFORMED_TOKEN, Reason.ALGORITHM_NOT_ALLOWED, Reason.UNSUPPORTED_CRIT,
    Reason.WRONG_TOKEN_TYPE, Reason.UNKNOWN_ISSUER, Reason.BAD_SIGNATURE,
    Reason.TOKEN_EXPIRED, Reason.WRONG_AUDIENCE, Reason.BAD_CLAIMS, Reason.TOKEN_TOO_OLD})


class KeyRevision(Protocol):
    """An issuer's KeySet as this cache sees it: `revision` moves whenever its keys change."""

    revision: int


class RejectedTokens:
    """FIFO of (reason, expiry) by token digest; one TTL for all, so the oldest expires first.
    The TTL runs on `clock`, monotonic: on wall time a clock stepped back kept every entry for
    the length of the step."""

    def __init__(self, max_entries: int, ttl: float, keysets: Iterable[KeyRevision] = (),
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._max_entries = max_entries
        self._ttl = ttl
        self._clock = clock
        self._keysets = tuple(keysets)
        self._revision = self.keys_revision()
        self._entries: OrderedDict[bytes, tuple[Reason, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes) -> Reason | None:
        if not self._entries:
            return None
        self._forget_if_keys_changed()
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self._clock() >= entry[1]:
            del self._entries[key]
            return None
        return entry[0]

    def put(self, key: bytes, reason: Reason, keys_revision: int,
            refetch_missed: bool = False) -> None:
        """Remember `reason` for this token if it is one of PERMANENT_REASONS, the keys have
        not changed since `keys_revision` (a fetch while it was verified may have fixed it),
        and no refetch for this token was missed (JwtVerifier.refetch_missed)."""
        if self._max_entries == 0 or reason not in PERMANENT_REASONS or refetch_missed:
            return
        self._forget_if_keys_changed()
        if keys_revision != self._revision:
            return
        self._entries.pop(key, None)  # two Checks verified it at once: keep one, at the end
        self._entries[key] = (reason, self._clock() + self._ttl)
        if len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def _forget_if_keys_changed(self) -> None:
        # A bad signature may verify under a key published since (a kidless token, or a key
        # replaced under its kid), and any reason found under the old keys may not be the one
        # verification gives now: start over rather than track which issuer each entry needs.
        revision = self.keys_revision()
        if revision != self._revision:
            self._entries.clear()
            self._revision = revision

    def keys_revision(self) -> int:
        """What put() must be given: read before verifying, as the keys that verification uses.
        Each issuer's revision only grows, so the sum moves with any of them."""
        return sum(k.revision for k in self._keysets)
