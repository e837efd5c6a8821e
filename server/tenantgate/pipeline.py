"""CheckState and the visible list of stages a Check runs through."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tenantgate.context import MAX_CONTEXT_BYTES, payload_prefix
from tenantgate.decision import (
    Allow,
    Decision,
    Deny,
    Header,
    Reason,
    TemplateKey,
    encode_fixed,
    encode_metadata,
)
from tenantgate.identity.credentials import Credential, credential_stage
from tenantgate.identity.model import Identity
from tenantgate.identity.stage import cached_identity, identity_stage
from tenantgate.memo import remember
from tenantgate.policy import CompiledRoute, policy_stage
from tenantgate.quota.stage import quota_stage
from tenantgate.request import RequestView
from tenantgate.tenancy import Tenant, tenant_stage

if TYPE_CHECKING:
    from tenantgate.identity.apikey_store import KeyRecord
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
    quota_headers: Sequence[Header] = ()  # informative, on allow (no list built per Check)
    refused_key: KeyRecord | None = None  # the stored API key a refusal was about, if any


MAX_METHOD_CHARS = 32  # the longest registered HTTP method (UPDATEREDIRECTREF) has 17


def sanitize(s: CheckState) -> Deny | None:
    if s.request.duplicated:
        return Deny(Reason.DUPLICATE_HEADER)
    if s.request.oversized:
        return Deny(Reason.OVERSIZED_HEADER)
    if s.request.underscored and _underscored_trusted_header(s):
        return Deny(Reason.UNDERSCORED_TRUSTED_HEADER)
    method = s.request.method
    if len(method) > MAX_METHOD_CHARS or method != method.upper():
        # HTTP/2 passes `post` as sent: rules would read it as POST, rate-limit descriptors
        # (`method: POST`) would not match it, and some backends would run it as POST.
        # Envoy passes any token as a method, up to its whole header budget (60 KiB).
        return Deny(Reason.MALFORMED_REQUEST)
    return None


def _underscored_trusted_header(s: CheckState) -> bool:
    """`x_tenant_id` for `x-tenant-id`: CGI/WSGI stacks read both as HTTP_X_TENANT_ID, and
    neither the strip nor the overwrite touches that spelling. The generated Envoy config
    refuses underscores outright; a proxy that lets them through (Istio's default) ends here."""
    trusted = s.runtime.trusted_headers
    return any(name.replace("_", "-") in trusted for name in s.request.headers if "_" in name)


async def decide(s: CheckState) -> Decision:
    if deny := sanitize(s):
        return deny  # duplicate, oversized, ambiguous headers
    if deny := credential_stage(s):
        return deny  # exactly one credential -> s.credential
    if not cached_identity(s) and (deny := await identity_stage(s)):
        return deny  # token cache, else JWT or API key verification -> s.identity
    if deny := tenant_stage(s):
        return deny  # -> s.tenant (pattern, issuer binding, registry status)
    if deny := policy_stage(s):
        return deny  # route rules, scopes, sizes, path tenant -> s.route
    if s.runtime.limiter is not None and (deny := await quota_stage(s)):
        return deny  # one store round trip; may add informative headers
    return allow(s)


@dataclass(frozen=True, slots=True)
class AllowTemplate:
    """What every allow for one tenant and caller repeats, encoded once (per Runtime)."""

    headers_to_set: tuple[Header, ...]
    metadata: dict[str, str]
    encoded_fixed: bytes  # headers_to_set and the runtime's headers_to_remove
    encoded_metadata: bytes
    payload_prefix: str  # of the signed context: context.payload_prefix()


def allow(s: CheckState) -> Allow | Deny:
    """Headers to set (overwriting any client copy), trusted headers to strip, metadata."""
    tenant, identity = s.tenant, s.identity
    assert identity is not None and tenant is not None  # set by the stages above
    rt = s.runtime
    ctx = rt.config.context
    key: TemplateKey = (tenant.id, tenant.plan, identity.issuer, identity.subject)
    template = rt.allow_templates.get(key)
    if template is None:
        template = _remember_template(s, key)
    signed = rt.key_ring.sign_after(template.payload_prefix, s.request.request_id, ctx.ttl)
    if len(signed) > MAX_CONTEXT_BYTES:
        # Backends (and Postgres) refuse a context this long: an allow would only fail later.
        # Bounded subjects and request ids keep it short; a very long tenant pattern may not.
        return Deny(Reason.BAD_CLAIMS)
    return Allow(template.headers_to_set, ((ctx.header, signed),), rt.headers_to_remove,
                 s.quota_headers, template.metadata, template.encoded_fixed,
                 template.encoded_metadata)


MAX_ALLOW_TEMPLATES = 10_000


def _remember_template(s: CheckState, key: TemplateKey) -> AllowTemplate:
    assert s.identity is not None and s.tenant is not None
    rt = s.runtime
    ctx = rt.config.context
    headers_to_set = ((ctx.tenant_header, s.tenant.id),
                      (ctx.subject_header, s.identity.subject_header_value))
    metadata = {"tenant": s.tenant.id, "subject": s.identity.subject,
                "plan": s.tenant.plan or "", "issuer": s.identity.issuer}
    template = AllowTemplate(headers_to_set, metadata,
                             encode_fixed(headers_to_set, rt.headers_to_remove),
                             encode_metadata(metadata),
                             payload_prefix(s.tenant.id, s.identity.subject))
    return remember(rt.allow_templates, key, template, MAX_ALLOW_TEMPLATES)
