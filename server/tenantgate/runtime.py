"""Runtime: the compiled, immutable state built from one Config; a reload swaps the whole."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx

from tenantgate.config.model import Config
from tenantgate.context import KeyRing
from tenantgate.decision import TemplateKey
from tenantgate.errors import ConfigError
from tenantgate.identity.apikeys import ApiKeys, build_api_keys
from tenantgate.identity.jwks import KeySet
from tenantgate.identity.jwt import JwtVerifier
from tenantgate.identity.rejected_tokens import RejectedTokens
from tenantgate.identity.token_cache import TokenCache
from tenantgate.observe import metrics
from tenantgate.observe.audit import AuditLog
from tenantgate.policy import RouteMatch, RouteTable, compile_routes
from tenantgate.quota import build_limiter, endpoint_paths
from tenantgate.tenancy import TenantRules

if TYPE_CHECKING:
    from tenantgate.pipeline import AllowTemplate
    from tenantgate.quota import Limiter


@dataclass(eq=False)
class Runtime:
    config: Config
    key_ring: KeyRing
    jwt: JwtVerifier
    keysets: dict[str, KeySet]
    token_cache: TokenCache
    rejected_tokens: RejectedTokens
    tenants: TenantRules
    routes: RouteTable
    headers_to_remove: tuple[str, ...]
    trusted_headers: frozenset[str]  # every header a backend trusts: set or removed on allow
    limiter: Limiter | None
    api_keys: ApiKeys | None  # when API keys are configured
    audit: AuditLog
    http: httpx.AsyncClient
    # Pre-encoded allow parts per (tenant, plan, issuer, subject): see pipeline.allow.
    allow_templates: dict[TemplateKey, AllowTemplate] = field(default_factory=dict)
    # The route each (method, path, tenant) takes: see policy.find_route.
    route_memo: dict[tuple[str, str, str], RouteMatch] = field(default_factory=dict)
    # Calls that took this runtime as their snapshot and have not finished (see pin()):
    # a reload closes the runtime it replaced only once `idle` says there are none left.
    in_flight: int = field(default=0, init=False, repr=False)
    idle: asyncio.Event = field(default_factory=asyncio.Event, init=False, repr=False)

    def pin(self) -> Runtime:
        """Count a call that took this runtime as its snapshot; unpin() when it ends."""
        self.in_flight += 1
        return self

    def unpin(self) -> None:
        self.in_flight -= 1
        if not self.in_flight:
            self.idle.set()

    @classmethod
    def build(cls, config: Config, replacing: Runtime | None = None) -> Runtime:
        """`replacing`: the running runtime, on a reload."""
        http = httpx.AsyncClient(follow_redirects=False, trust_env=False)
        keysets = {i.name: KeySet(i, http) for i in config.issuers if i.jwks is not None}
        known = replacing.keysets if replacing is not None else {}
        for name, keyset in keysets.items():
            if name in known:
                keyset.carry_over(known[name])  # a reload: only from an unchanged source
        # At start-up nothing is served yet and serve waits for a FIFO's reader (docs); on a
        # reload that wait would hold the event loop: the reload is refused instead.
        audit = _open_audit(config, wait_for_reader=replacing is None)
        try:
            return cls._assemble(config, http, keysets, audit)
        except BaseException:
            # A rejected reload must not leave its audit file open. `http` needs no close here:
            # nothing has used it yet (KeySet.start fetches), and an unused client holds no
            # socket or thread, only memory that goes with it.
            audit.close()
            raise

    @classmethod
    def _assemble(cls, config: Config, http: httpx.AsyncClient, keysets: dict[str, KeySet],
                  audit: AuditLog) -> Runtime:
        ctx = config.context
        creds = config.credentials
        api_keys = build_api_keys(config, audit)
        metrics.declare_tenants(config.tenants.registry)
        return cls(
            config=config,
            key_ring=KeyRing({k.id: k.secret.value for k in ctx.keys}, ctx.active_key),
            jwt=JwtVerifier(config.issuers, keysets),
            keysets=keysets,
            token_cache=TokenCache(creds.token_cache_entries, creds.token_cache_bytes),
            rejected_tokens=RejectedTokens(creds.rejected_token_cache_entries,
                                           creds.rejected_token_cache_ttl, keysets.values()),
            tenants=TenantRules(config),
            routes=compile_routes(config.policy, endpoint_paths(config)),
            # The override headers too: under a mesh (Istio) nothing else strips them on
            # east-west calls, and a backend honouring one would run another method or path.
            # With API keys on, the key stops here too: the backend gets the tenant and the
            # signed context, and a long-lived secret has no business in its logs.
            headers_to_remove=ctx.headers_to_remove + (
                (creds.api_key_header,) if api_keys is not None else ()),
            trusted_headers=frozenset(ctx.stripped_headers),
            api_keys=api_keys,
            audit=audit,
            http=http,
            limiter=build_limiter(config),  # last: it takes a reference on a shared store
        )

    async def start(self) -> None:
        """Warm JWKS caches and connect stores; failures here degrade, they do not abort."""
        await asyncio.gather(*(ks.start() for ks in self.keysets.values()))
        if self.limiter is not None:
            await self.limiter.start()
        if self.api_keys is not None:
            await self.api_keys.start()

    async def close(self) -> None:
        for keyset in self.keysets.values():
            await keyset.close()
        if self.limiter is not None:
            await self.limiter.close()
        if self.api_keys is not None:
            await self.api_keys.close()
        await self.http.aclose()
        self.audit.close()


def _open_audit(config: Config, wait_for_reader: bool) -> AuditLog:
    audit = config.audit
    try:
        return AuditLog(audit.path, audit.sample_allow, audit.enabled,
                        audit.max_lines_per_second, wait_for_reader)
    except OSError as exc:
        raise ConfigError([f"audit.path: cannot open {audit.path}: {exc.strerror}"]) from None
