"""Per-tenant quotas: `build_limiter(config)` gives the Runtime its Limiter (None when off)."""

from __future__ import annotations

import logging

from tenantgate.config.model import Config
from tenantgate.quota.limiter import CompiledPlan, Limiter, tenant_plans
from tenantgate.quota.memory import MemoryStore
from tenantgate.quota.redis import SharedStores
from tenantgate.quota.rls_config import Node, load_domains

__all__ = ["Limiter", "build_limiter", "endpoint_paths", "validate"]

log = logging.getLogger("tenantgate.quota")
_SHARED = SharedStores()
_EMBEDDED: list[MemoryStore] = []  # the embedded store
_DEGRADED: list[MemoryStore] = []  # the local buckets of degraded mode


def _kept(stores: list[MemoryStore], max_entries: int) -> MemoryStore:
    """One store for the life of the process: a reload must not refill its buckets."""
    if not stores:
        stores.append(MemoryStore(max_entries))
    elif stores[0].max_entries != max_entries:
        log.warning("quota.max_local_entries changed to %d: the local stores keep %d until "
                    "the next restart", max_entries, stores[0].max_entries)
    return stores[0]


def build_limiter(config: Config) -> Limiter | None:
    """A Limiter for this config, sharing its store with earlier Runtimes; None when disabled.

    A SIGHUP rebuild reuses the Redis connection (reference-counted: the old Runtime's
    `close()` only drops its reference), the embedded store and degraded mode's local
    buckets, which a reload must not refill. Raises ConfigError when a registry tenant names
    a plan that does not exist.
    """
    q = config.quota
    if not q.enabled:
        return None
    # Built (and so validated) before taking a reference on a shared store, then handed over.
    plans, domains = _plans_and_domains(config)
    degraded = _kept(_DEGRADED, q.max_local_entries)
    if q.store == "memory":
        return Limiter(config, _kept(_EMBEDDED, q.max_local_entries), degraded=degraded,
                       built_plans=plans, built_domains=domains)
    redis_cfg = q.redis

    async def release() -> None:
        await _SHARED.release_redis(redis_cfg)

    return Limiter(config, _SHARED.acquire_redis(redis_cfg), release, degraded=degraded,
                   built_plans=plans, built_domains=domains)


def validate(config: Config) -> None:
    """The checks build_limiter makes (plans exist, rate-limit files load), without a store."""
    if config.quota.enabled:
        _plans_and_domains(config)


def endpoint_paths(config: Config) -> list[str]:
    """The path patterns of the endpoint rules in force, plans' and tenants' own (none while
    the quota is off): the policy refuses paths that would dodge them (policy.RouteTable)."""
    if not config.quota.enabled:
        return []
    rules = [e for plan in config.quota.plans.values() for e in plan.endpoints]
    rules += [e for t in config.tenants.registry.values() for e in t.overrides.endpoints or ()]
    return [e.path for e in rules]


def _plans_and_domains(config: Config) -> tuple[dict[str, CompiledPlan], dict[str, Node]]:
    """The tenants' own plans and the rate-limit files' domains; ConfigError where wrong."""
    return tenant_plans(config), load_domains(config.quota.ratelimit_service.config_files)
