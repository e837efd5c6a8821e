"""Tenant rules: the id pattern, which issuer may speak for which tenant, the registry."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tenantgate.config.linear_regex import compile_linear
from tenantgate.config.model import (
    ALWAYS_SAFE_TENANT_ID,
    API_KEY_ISSUER,
    MAX_TENANT_ID_CHARS,
    Config,
)
from tenantgate.decision import Deny, Reason
from tenantgate.memo import remember
from tenantgate.observe.metrics import OTHER_TENANT

if TYPE_CHECKING:
    from tenantgate.pipeline import CheckState

MAX_CACHED_VERDICTS = 10_000


@dataclass(frozen=True, slots=True)
class Tenant:
    id: str
    plan: str | None
    known: bool  # in the registry
    # The metric label: registry tenants by name, everyone else as one bucket. A field, not
    # a property: Checks read it twice, and tenants are built once per (issuer, claim).
    label: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "label", self.id if self.known else OTHER_TENANT)


class TenantRules:
    def __init__(self, config: Config) -> None:
        self._pattern = compile_linear(config.tenants.pattern)
        self._registry = config.tenants.registry
        self._unknown_allowed = config.tenants.unknown_allowed
        self._issuer_lists = {i.name: frozenset(i.tenants) for i in config.issuers if i.tenants}
        self._issuer_patterns = {i.name: compile_linear(i.tenant_pattern)
                                 for i in config.issuers if i.tenant_pattern is not None}
        # Verdicts per (issuer, tenant claim): pure functions of this config, which a reload
        # replaces together with this object. Bounded: cleared when full.
        self._verdicts: dict[tuple[str, str], Tenant | Reason] = {}

    def decide(self, issuer: str, claim: object) -> Tenant | Reason:
        """The tenant an identity of `issuer` claiming `claim` acts for, or why not."""
        if claim is None:
            return Reason.TENANT_MISSING
        if not isinstance(claim, str) or len(claim) > MAX_TENANT_ID_CHARS:
            return Reason.TENANT_INVALID  # not remembered: the memo bounds entries, not bytes
        key = (issuer, claim)
        verdict = self._verdicts.get(key)
        if verdict is None:
            verdict = remember(self._verdicts, key, self._decide(issuer, claim),
                               MAX_CACHED_VERDICTS)
        return verdict

    def _decide(self, issuer: str, claim: str) -> Tenant | Reason:
        if not self.valid_id(claim):
            return Reason.TENANT_INVALID
        if not self.issuer_may_speak_for(issuer, claim):
            return Reason.ISSUER_NOT_ALLOWED_FOR_TENANT
        return self.resolve(claim)

    def valid_id(self, tenant_id: str) -> bool:
        return bool(ALWAYS_SAFE_TENANT_ID.fullmatch(tenant_id)
                    and self._pattern.fullmatch(tenant_id))

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
            return Tenant(tenant_id, None, known=False)
        if entry.status == "suspended":
            return Reason.TENANT_SUSPENDED
        return Tenant(tenant_id, entry.plan, known=True)

    def label(self, tenant_id: str | None) -> str:
        return tenant_id if tenant_id in self._registry else OTHER_TENANT


def tenant_stage(s: CheckState) -> Deny | None:
    assert s.identity is not None
    verdict = s.runtime.tenants.decide(s.identity.issuer, s.identity.tenant_claim)
    if isinstance(verdict, Reason):
        return Deny(verdict)
    s.tenant = verdict
    return None
