"""Per-tenant quotas: `build_limiter(config)` gives the Runtime its Limiter (None when off)."""

from __future__ import annotations

from tenantgate.config.model import Config
from tenantgate.quota.limiter import Limiter, tenant_plans
from tenantgate.quota.memory import MemoryStore
from tenantgate.quota.redis import SharedStores
from tenantgate.quota.rls_config import load_domains

__all__ = ["Limiter", "build_limiter", "validate"]

_SHARED = SharedStores()
_EMBEDDED: list[MemoryStore] = []


def build_limiter(config: Config) -> Limiter | None:
    """A Limiter for this config, sharing its store with earlier Runtimes; None when disabled.

    A SIGHUP rebuild reuses the Redis connection (reference-counted: the old Runtime's
    `close()` only drops its reference) and the embedded store, whose buckets a reload must
    not refill. Raises ConfigError when a registry tenant names a plan that does not exist.
    """
    q = config.quota
    if not q.enabled:
        return None
    tenant_plans(config)  # validate before taking a reference on a shared store
    load_domains(q.ratelimit_service.config_files)
    if q.store == "memory":
        if not _EMBEDDED:
            _EMBEDDED.append(MemoryStore(q.max_local_entries))
        return Limiter(config, _EMBEDDED[0])
    redis_cfg = q.redis

    async def release() -> None:
        await _SHARED.release_redis(redis_cfg)

    return Limiter(config, _SHARED.acquire_redis(redis_cfg), release)


def validate(config: Config) -> None:
    """The checks build_limiter makes (plans exist, rate-limit files load), without a store."""
    if config.quota.enabled:
        tenant_plans(config)
        load_domains(config.quota.ratelimit_service.config_files)
