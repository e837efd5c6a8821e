"""CheckState and the visible list of stages a Check runs through."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tenantgate.decision import Allow, Decision, Deny, Header, Reason
from tenantgate.identity.credentials import Credential, credential_stage
from tenantgate.identity.model import Identity
from tenantgate.identity.stage import identity_stage
from tenantgate.policy import CompiledRoute, policy_stage
from tenantgate.quota.stage import quota_stage
from tenantgate.request import RequestView
from tenantgate.tenancy import Tenant, tenant_stage

if TYPE_CHECKING:
    from tenantgate.runtime import Runtime


@dataclass(slots=True)
class CheckState:
    """Everything one Check knows; each stage reads what earlier ones set and sets one field."""

    runtime: Runtime
    request: RequestView
    credential: Credential | None = None
    identity: Identity | None = None
    tenant: Tenant | None = None
    route: CompiledRoute | None = None
    quota_headers: list[Header] = field(default_factory=list)  # informative, on allow


def sanitize(s: CheckState) -> Deny | None:
    if s.request.duplicated:
        return Deny(Reason.DUPLICATE_HEADER)
    if s.request.oversized:
        return Deny(Reason.OVERSIZED_HEADER)
    return None


async def decide(s: CheckState) -> Decision:
    if deny := sanitize(s):
        return deny  # duplicate, oversized, ambiguous headers
    if deny := credential_stage(s):
        return deny  # exactly one credential -> s.credential
    if deny := await identity_stage(s):
        return deny  # JWT or API key -> s.identity (token cache first)
    if deny := tenant_stage(s):
        return deny  # -> s.tenant (pattern, issuer binding, registry status)
    if deny := policy_stage(s):
        return deny  # route rules, scopes, sizes, path tenant -> s.route
    if deny := await quota_stage(s):
        return deny  # one store round trip; may add informative headers
    return allow(s)


def allow(s: CheckState) -> Allow:
    """Headers to set (overwriting any client copy), trusted headers to strip, metadata."""
    assert s.identity is not None and s.tenant is not None  # set by the stages above
    rt = s.runtime
    ctx = rt.config.context
    signed = rt.key_ring.sign(s.tenant.id, s.identity.subject, s.request.request_id, ctx.ttl)
    metadata = {"tenant": s.tenant.id, "subject": s.identity.subject,
                "plan": s.tenant.plan or "", "issuer": s.identity.issuer}
    return Allow(
        headers_to_set=[(ctx.tenant_header, s.tenant.id),
                        (ctx.subject_header, s.identity.subject_header_value)],
        fresh_headers=[(ctx.header, signed)],
        headers_to_remove=rt.headers_to_remove,
        response_headers=s.quota_headers,
        metadata=metadata,
    )
