"""Rate-limit response headers: Retry-After, RateLimit-Policy / RateLimit (IETF draft) and
X-RateLimit-Limit/Remaining/Reset (as Envoy's rate-limit filter writes them)."""

from __future__ import annotations

import math

from tenantgate.decision import Header
from tenantgate.quota.limiter import Verdict
from tenantgate.quota.store import Bucket, BucketState


def _seconds(us: int) -> int:
    return math.ceil(us / 1_000_000)


def _window(bucket: Bucket) -> int:
    return max(1, round(bucket.period))


def rate_headers(verdict: Verdict) -> list[Header]:
    """The policies that applied, and the state of the one that decided."""
    governing = verdict.governing()
    if governing is None:
        return []
    bucket, state = governing
    seen: dict[str, Bucket] = {b.name: b for b in verdict.buckets}
    policy = ", ".join(f'"{name}";q={b.limit};w={_window(b)}' for name, b in seen.items())
    return [
        ("ratelimit-policy", policy),
        ("ratelimit", f'"{bucket.name}";r={state.remaining};t={_seconds(state.reset_us)}'),
        ("x-ratelimit-limit", f"{bucket.limit}, {bucket.limit};w={_window(bucket)}"),
        ("x-ratelimit-remaining", str(state.remaining)),
        ("x-ratelimit-reset", str(_seconds(state.reset_us))),
    ]


def retry_seconds(state: BucketState) -> int:
    """Whole seconds, rounded up and never 0: a client retrying at once would only be denied."""
    return max(1, _seconds(state.retry_us))


def retry_after(state: BucketState) -> Header:
    return ("retry-after", str(retry_seconds(state)))


def deny_headers(verdict: Verdict) -> tuple[Header, ...]:
    governing = verdict.governing()
    if governing is None:
        return ()
    return (retry_after(governing[1]), *rate_headers(verdict))
