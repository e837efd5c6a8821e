"""Quota metrics: decisions per tenant (bounded labels), store errors, fail-open, degraded mode."""

from __future__ import annotations

import enum
from collections.abc import Iterable

from prometheus_client import Counter, Gauge

from tenantgate.observe.plain import PlainCounter


class QuotaResult(enum.StrEnum):
    ADMITTED = "admitted"
    LIMITED = "limited"


class RlsResult(enum.StrEnum):
    OK = "ok"
    OVER_LIMIT = "over_limit"
    SHADOW_OVER_LIMIT = "shadow_over_limit"  # would have been limited; shadow_mode let it pass
    UNAVAILABLE = "unavailable"
    INVALID = "invalid"  # INVALID_ARGUMENT: too many or too long descriptors, or unparseable


# Counted on every Check with a quota: plain, no lock per increment (observe/plain.py).
DECISIONS = PlainCounter("tenantgate_quota_decisions_total",
                         "Quota decisions by tenant (registry tenants only; others are 'other')",
                         ["tenant", "result"])
STORE_ERRORS = Counter("tenantgate_quota_store_errors_total",
                       "Quota store calls that failed or timed out", ["store"])
FAIL_OPEN = Counter("tenantgate_quota_fail_open_total",
                    "Requests admitted without a quota decision because the store failed")
FAIL_CLOSED = Counter("tenantgate_quota_fail_closed_total",
                      "Requests refused (503) because the store failed and the mode is closed")
DEGRADED_ACTIVE = Gauge("tenantgate_quota_degraded_active",
                        "1 while the store is failing and local limit/replicas buckets decide")
_degraded_limiters = 0  # live limiters whose Degraded is set: DEGRADED_ACTIVE is 1 while any


class Degraded:
    """One limiter's part of DEGRADED_ACTIVE. Per limiter, not one process-wide flag: closing
    the last degraded limiter (a reload that turned the quota off) must clear the gauge, and a
    new limiter starting must not clear what an old one still reports (an alert's `for:`)."""

    __slots__ = ("active",)

    def __init__(self) -> None:
        self.active = False

    def set(self, active: bool) -> None:
        # Only on a change: every successful decision reports "not degraded", and the
        # gauge's lock is not worth taking per request for an unchanged value.
        if active is not self.active:
            global _degraded_limiters
            self.active = active
            _degraded_limiters += 1 if active else -1
            DEGRADED_ACTIVE.set(1 if _degraded_limiters else 0)


LOCAL_DENIALS = Counter("tenantgate_quota_local_denials_total",
                        "Denials answered from the local over-limit cache or batched mirror, "
                        "without a store round trip")
# tenant: "" for a plan as configured, a registry tenant's id for its plan with overrides.
BATCHED_BOUND = Gauge("tenantgate_quota_batched_overadmission_bound",
                      "Batched mode: most requests one replica may admit unseen by the others "
                      "per bucket and interval (x replicas = the bound)",
                      ["plan", "bucket", "tenant"])
# Started, not yet closed limiters, oldest first, with their bounds: the newest is shown.
_live_bounds: list[tuple[object, list[tuple[str, str, str, float]]]] = []
RLS_REQUESTS = Counter("tenantgate_ratelimit_service_requests_total",
                       "ShouldRateLimit calls by domain (configured domains only) and result",
                       ["domain", "result"])


def show_batched_bounds(limiter: object,
                        bounds: Iterable[tuple[str, str, str, float]]) -> None:
    """A starting limiter's (plan, bucket, tenant, bound)s replace those shown: a reload that
    removed a plan, or made it exact, must not leave its old series behind."""
    _live_bounds.append((limiter, list(bounds)))
    _show_newest()


def hide_batched_bounds(limiter: object) -> None:
    """A closing limiter's bounds go; the newest limiter still open is shown (a new runtime
    whose start failed closes while the one it was to replace goes on deciding)."""
    _live_bounds[:] = [entry for entry in _live_bounds if entry[0] is not limiter]
    _show_newest()


def _show_newest() -> None:
    BATCHED_BOUND.clear()
    for plan, bucket, tenant, bound in (_live_bounds[-1][1] if _live_bounds else ()):
        BATCHED_BOUND.labels(plan, bucket, tenant).set(bound)


def declare_store(store: str) -> None:
    """Create a store's error series at 0: alerts use increase()."""
    STORE_ERRORS.labels(store)


def store_error(store: str) -> None:
    STORE_ERRORS.labels(store).inc()


def rls_request(domain: str, result: RlsResult) -> None:
    RLS_REQUESTS.labels(domain, result.value).inc()
