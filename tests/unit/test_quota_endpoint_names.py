"""An endpoint rule named as its plan is refused: its buckets were named as the plan's
(`p-1s`), so the over-admission gauge showed one series for two buckets (the last won) and
the headers named both alike."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY
from tenantgate.config.load import parse_config
from tenantgate.errors import ConfigError
from tenantgate.quota import Limiter
from tenantgate.quota.memory import MemoryStore

BASE = """
context:
  active_key: k1
  keys: [{id: k1, secret: {fromEnv: TG_QUOTA_TEST_SECRET}}]
quota:
  enabled: true
  plans:
    p: {limits: ['1/s'], mode: batched, endpoints: [{name: ENDPOINT, limits: ['1/s']}]}
"""
MESSAGE = ("'p' is the plan's own name: its buckets would be named as the plan's "
           "(p-<period>s) in headers and metrics; name it apart")


@pytest.fixture(autouse=True)
def secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TG_QUOTA_TEST_SECRET", "x" * 40)


def test_an_endpoint_rule_named_as_its_plan_is_refused_at_its_key_path() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(BASE.replace("ENDPOINT", "p"))
    assert caught.value.issues == [f"quota.plans.p.endpoints[0].name: {MESSAGE}"]


def test_a_tenant_override_naming_an_endpoint_as_the_plan_is_refused() -> None:
    config = parse_config(BASE.replace("ENDPOINT", "e") + """
tenants:
  registry:
    acme:
      plan: p
      overrides: {endpoints: [{name: e, limits: ['2/s']}, {name: p, limits: ['1/s']}]}
""")
    with pytest.raises(ConfigError) as caught:
        Limiter(config, MemoryStore())
    assert caught.value.issues == [f"tenants.registry.acme.overrides.endpoints[1].name: {MESSAGE}"]


async def test_endpoint_buckets_named_apart_have_their_own_series() -> None:
    limiter = Limiter(parse_config(BASE.replace("ENDPOINT", "e")), MemoryStore())
    await limiter.start()
    try:
        shown = {s.labels["bucket"] for f in REGISTRY.collect()
                 if f.name == "tenantgate_quota_batched_overadmission_bound" for s in f.samples}
        assert shown == {"p-1s", "e-1s"}
    finally:
        await limiter.close()
