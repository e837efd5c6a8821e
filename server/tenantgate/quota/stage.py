"""The quota stage of a Check: the tenant's plan and endpoint buckets, one store round trip."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tenantgate.decision import Deny, Reason
from tenantgate.observe import quota as metrics
from tenantgate.quota.headers import deny_headers, rate_headers

if TYPE_CHECKING:
    from tenantgate.pipeline import CheckState


async def quota_stage(s: CheckState) -> Deny | None:
    """Deny with 429 (and when to retry) over quota, 503 when the store failed closed."""
    limiter = s.runtime.limiter
    tenant = s.tenant
    if limiter is None or tenant is None:
        return None
    plan = limiter.plan_for(tenant.id, tenant.plan, tenant.known)
    if plan is None:
        return None  # no plan and no default plan: nothing to enforce
    request = s.request
    verdict = limiter.check_local(plan, tenant.id, request.method, request.path)
    if verdict is None:  # only the store can decide: one round trip
        verdict = await limiter.check_store(plan, tenant.id, request.method, request.path)
    if verdict.unavailable:
        return Deny(Reason.QUOTA_UNAVAILABLE)
    label = tenant.label
    if not verdict.admitted:
        metrics.DECISIONS.inc((label, metrics.QuotaResult.LIMITED))
        return Deny(Reason.QUOTA_EXCEEDED, headers=deny_headers(verdict))
    metrics.DECISIONS.inc((label, metrics.QuotaResult.ADMITTED))
    if limiter.headers_on_allow:
        s.quota_headers = rate_headers(verdict)
    return None
