"""Prometheus metrics of API keys and their admin API: a closed result vocabulary, bounded
tenant labels."""

from __future__ import annotations

import dataclasses
import enum

from prometheus_client import Counter, Gauge


class KeyResult(enum.StrEnum):
    OK = "ok"
    INVALID = "invalid"  # unknown id, malformed, wrong prefix, wrong secret: one bucket
    REVOKED = "revoked"
    EXPIRED = "expired"
    UNAVAILABLE = "unavailable"  # the key store could not be read


APIKEY_CHECKS = Counter("tenantgate_apikey_checks", "API-key verifications",
                        ["tenant", "result"])
APIKEY_REVOKED_ATTEMPTS = Counter("tenantgate_apikey_revoked_attempts",
                                  "Requests presenting a revoked API key", ["tenant"])
ADMIN_AUTH_FAILURES = Counter("tenantgate_admin_auth_failures",
                              "Admin API calls refused for want of the admin token")
REVOCATION_SUBSCRIBED = Gauge("tenantgate_apikey_revocation_subscribed",
                              "1 while the API-key revocation channel's subscription is "
                              "confirmed, 0 while not", ["channel"])


@dataclasses.dataclass
class _Subscriber:
    owner: object  # an ApiKeys
    channel: str
    subscribed: bool = False


# Started, not yet closed verifiers, oldest first. A channel's series shows its newest one: a
# reload's new verifier wins over the old one it replaces (both may listen on the channel for
# a while), and a new one whose start failed hands the series back to the old one still open.
_subscribers: list[_Subscriber] = []
_shown: set[str] = set()


def subscriber_started(owner: object, channel: str) -> None:
    """A starting verifier's channel series, at 0 until its subscription is confirmed."""
    _subscribers.append(_Subscriber(owner, channel))
    _show_subscribers()


def subscriber_state(owner: object, subscribed: bool) -> None:
    for entry in _subscribers:
        if entry.owner is owner:
            entry.subscribed = subscribed
    _show_subscribers()


def subscriber_closed(owner: object) -> None:
    """A closing verifier's series goes, unless a verifier still open shows its channel."""
    _subscribers[:] = [entry for entry in _subscribers if entry.owner is not owner]
    _show_subscribers()


def _show_subscribers() -> None:
    newest = {entry.channel: entry.subscribed for entry in _subscribers}  # later ones win
    for channel in _shown - newest.keys():
        REVOCATION_SUBSCRIBED.remove(channel)
    for channel, subscribed in newest.items():
        REVOCATION_SUBSCRIBED.labels(channel).set(1 if subscribed else 0)
    _shown.clear()
    _shown.update(newest)
