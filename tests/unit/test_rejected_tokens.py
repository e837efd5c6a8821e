"""The rejected-token cache: only reasons that neither time nor a key can fix, for one TTL,
bounded, emptied when any issuer's keys change."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import tenantgate.identity.jwt
from tenantgate.decision import Reason
from tenantgate.identity.rejected_tokens import PERMANENT_REASONS, RejectedTokens
from tenantgate.identity.token_cache import token_key

CHANGEABLE = (Reason.UNKNOWN_KEY, Reason.TOKEN_NOT_YET_VALID, Reason.TOKEN_ISSUED_IN_FUTURE)


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Keys:
    """An issuer's key set as the cache sees it: a revision that moves when its keys change."""

    def __init__(self) -> None:
        self.revision = 1


def test_a_refused_token_gets_the_same_reason_until_the_ttl_ends() -> None:
    clock = Clock()
    cache = RejectedTokens(10, 60.0, clock=clock)
    cache.put(token_key("t"), Reason.TOKEN_EXPIRED, cache.keys_revision())
    clock.now += 59.999
    assert cache.get(token_key("t")) is Reason.TOKEN_EXPIRED
    assert cache.get(token_key("u")) is None
    clock.now += 0.001
    assert cache.get(token_key("t")) is None
    assert len(cache) == 0  # the expired entry is gone


@pytest.mark.parametrize("reason", sorted(PERMANENT_REASONS), ids=str)
def test_a_reason_no_time_or_key_change_can_fix_is_cached(reason: Reason) -> None:
    cache = RejectedTokens(10, 60.0)
    cache.put(token_key("t"), reason, cache.keys_revision())
    assert cache.get(token_key("t")) is reason


@pytest.mark.parametrize("reason", [*CHANGEABLE, Reason.API_KEY_INVALID], ids=str)
def test_a_reason_that_a_new_key_or_time_may_fix_is_not_cached(reason: Reason) -> None:
    cache = RejectedTokens(10, 60.0)
    cache.put(token_key("t"), reason, cache.keys_revision())
    assert cache.get(token_key("t")) is None and len(cache) == 0


def test_every_reason_jwt_verification_returns_is_classified() -> None:
    # A new reason in jwt.py must be put on one side or the other on purpose.
    source = Path(tenantgate.identity.jwt.__file__).read_text(encoding="utf-8")
    returned = {Reason[name] for name in re.findall(r"Reason\.([A-Z_]+)", source)}
    assert returned == PERMANENT_REASONS | set(CHANGEABLE)


def test_the_oldest_entry_goes_first_when_full() -> None:
    clock = Clock()
    cache = RejectedTokens(2, 60.0, clock=clock)
    for token in "abc":
        cache.put(token_key(token), Reason.BAD_SIGNATURE, cache.keys_revision())
        clock.now += 1
    assert len(cache) == 2
    assert cache.get(token_key("a")) is None
    assert cache.get(token_key("c")) is Reason.BAD_SIGNATURE


def test_zero_entries_disables_the_cache() -> None:
    cache = RejectedTokens(0, 60.0)
    cache.put(token_key("t"), Reason.BAD_SIGNATURE, cache.keys_revision())
    assert cache.get(token_key("t")) is None and len(cache) == 0


def test_any_change_of_any_issuers_keys_empties_the_cache() -> None:
    # Even a key added, not only one withdrawn: it may verify a signature refused before.
    keys, other = Keys(), Keys()
    cache = RejectedTokens(10, 60.0, [keys, other])
    cache.put(token_key("s"), Reason.BAD_SIGNATURE, cache.keys_revision())
    cache.put(token_key("e"), Reason.TOKEN_EXPIRED, cache.keys_revision())
    assert cache.get(token_key("s")) is Reason.BAD_SIGNATURE
    other.revision += 1
    assert cache.get(token_key("s")) is None and len(cache) == 0
    # Refused again under the new keys:
    cache.put(token_key("s"), Reason.BAD_SIGNATURE, cache.keys_revision())
    assert cache.get(token_key("s")) is Reason.BAD_SIGNATURE


def test_a_refusal_found_while_the_keys_changed_is_not_kept() -> None:
    # Verified under the old keys, stored after a fetch changed them: the new keys may accept it.
    keys = Keys()
    cache = RejectedTokens(10, 60.0, [keys])
    before = cache.keys_revision()
    keys.revision += 1
    cache.put(token_key("s"), Reason.BAD_SIGNATURE, before)
    assert cache.get(token_key("s")) is None
    cache.put(token_key("s"), Reason.BAD_SIGNATURE, cache.keys_revision())
    assert cache.get(token_key("s")) is Reason.BAD_SIGNATURE


def test_a_bad_signature_whose_refetch_was_missed_is_not_cached() -> None:
    # The refetch that might have found the key was refused or failed: a retry must verify.
    cache = RejectedTokens(10, 60.0)
    cache.put(token_key("t"), Reason.BAD_SIGNATURE, cache.keys_revision(),
              refetch_missed=True)
    assert cache.get(token_key("t")) is None and len(cache) == 0


def test_the_ttl_runs_on_the_monotonic_clock_by_default() -> None:
    # On wall time a clock stepped back kept every entry for the length of the step.
    assert RejectedTokens(10, 60.0)._clock is time.monotonic
