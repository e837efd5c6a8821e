"""Series that alerts watch with increase() exist at 0 before the first event: a series that
first appears at 1 shows no increase, so a process's first event would never alert."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from tenantgate.runtime import Runtime
from tenantgate.testing.check import DevIssuer, build_config


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


async def test_alerted_series_exist_at_zero_once_a_runtime_is_built(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TG_SERIES_HASH", "h" * 40)
    tenant = "series-only-tenant"  # a registry tenant no other test touches
    issuer = "series-only-idp"  # and an issuer name
    never_dialled = "redis://127.0.0.1:1/0"  # start() is not run
    config = build_config(
        tmp_path, [DevIssuer(name=issuer).config()], tenants={"registry": {tenant: {}}},
        api_keys={"hash_secret": {"fromEnv": "TG_SERIES_HASH"}, "redis_url": never_dialled},
        quota={"enabled": True, "store": "redis", "redis": {"url": never_dialled},
               "plans": {"free": {"limits": ["1/s"]}}})
    runtime = Runtime.build(config)
    try:
        for label in (tenant, "other"):
            assert sample("tenantgate_cross_tenant_attempts_total", tenant=label) == 0.0
            assert sample("tenantgate_apikey_revoked_attempts_total", tenant=label) == 0.0
        for result in ("ok", "rejected"):
            assert sample("tenantgate_config_reloads_total", result=result) is not None
        for result in ("ok", "not_modified", "error"):
            assert sample("tenantgate_jwks_fetches_total", issuer=issuer, result=result) == 0.0
        # Shared labels (other tests may have counted on them): present is what is asked.
        assert sample("tenantgate_quota_store_errors_total", store="redis") is not None
        assert sample("tenantgate_apikey_checks_total", tenant="other",
                      result="unavailable") is not None
    finally:
        await runtime.close()
