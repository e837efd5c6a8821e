"""Tenant rules: the id pattern, which issuer may speak for which tenant, the registry."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tenantgate.config.model import Config, TenantEntry
from tenantgate.decision import Deny, Reason
from tenantgate.observe.metrics import OTHER_TENANT

if TYPE_CHECKING:
    from tenantgate.pipeline import CheckState

# Applied whatever the configured pattern says: printable ASCII without space, quotes,
# backslash, comma or semicolon, so a tenant id can never split a header, log line or SQL.
_ALWAYS_SAFE = re.compile(r"[A-Za-z0-9!#$%&()*+\-./:<=>?@\[\]^_{|}~]{1,255}")
API_KEY_ISSUER = "api-key"  # API-key identities carry the tenant of the key's own record


@dataclass(frozen=True, slots=True)
class Tenant:
    id: str
    plan: str | None
    known: bool  # in the registry
    entry: TenantEntry | None

    @property
    def label(self) -> str:
        """The metric label: registry tenants by name, everyone else as one bucket."""
        return self.id if self.known else OTHER_TENANT


class TenantRules:
    def __init__(self, config: Config) -> None:
        self._pattern = re.compile(config.tenants.pattern)
        self._registry = config.tenants.registry
        self._unknown_allowed = config.tenants.unknown_allowed
        self._issuer_lists = {i.name: frozenset(i.tenants) for i in config.issuers if i.tenants}
        self._issuer_patterns = {i.name: re.compile(i.tenant_pattern)
                                 for i in config.issuers if i.tenant_pattern is not None}

    def valid_id(self, tenant_id: str) -> bool:
        return bool(_ALWAYS_SAFE.fullmatch(tenant_id) and self._pattern.fullmatch(tenant_id))

    def issuer_may_speak_for(self, issuer: str, tenant_id: str) -> bool:
        if issuer == API_KEY_ISSUER:
            return True
        if (allowed := self._issuer_lists.get(issuer)) is not None:
            return tenant_id in allowed
        pattern = self._issuer_patterns.get(issuer)
        return pattern is not None and pattern.fullmatch(tenant_id) is not None

    def resolve(self, tenant_id: str) -> Tenant | Reason:
        entry = self._registry.get(tenant_id)
        if entry is None:
            if not self._unknown_allowed:
                return Reason.TENANT_UNKNOWN
            return Tenant(tenant_id, None, known=False, entry=None)
        if entry.status == "suspended":
            return Reason.TENANT_SUSPENDED
        return Tenant(tenant_id, entry.plan, known=True, entry=entry)

    def label(self, tenant_id: str | None) -> str:
        return tenant_id if tenant_id in self._registry else OTHER_TENANT


def tenant_stage(s: CheckState) -> Deny | None:
    assert s.identity is not None
    rules = s.runtime.tenants
    claim = s.identity.tenant_claim
    if claim is None:
        return Deny(Reason.TENANT_MISSING)
    if not isinstance(claim, str) or not rules.valid_id(claim):
        return Deny(Reason.TENANT_INVALID)
    if not rules.issuer_may_speak_for(s.identity.issuer, claim):
        return Deny(Reason.ISSUER_NOT_ALLOWED_FOR_TENANT)
    resolved = rules.resolve(claim)
    if isinstance(resolved, Reason):
        return Deny(resolved)
    s.tenant = resolved
    return None
