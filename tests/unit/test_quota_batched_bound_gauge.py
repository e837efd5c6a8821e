"""tenantgate_quota_batched_overadmission_bound: one series per batched bucket of every plan in
force, tenants' own plans included, and none left behind by a reload."""

from __future__ import annotations

import gc
import weakref

import pytest
from prometheus_client import REGISTRY
from tenantgate.config.load import parse_config
from tenantgate.quota import Limiter
from tenantgate.quota.memory import MemoryStore

CONFIG = """
context:
  active_key: k1
  keys: [{id: k1, secret: {fromEnv: TG_QUOTA_TEST_SECRET}}]
tenants:
  registry:
    acme: {plan: pro, overrides: {limits: ['100000/s']}}
    globex: {plan: free, overrides: {mode: batched}}
    initech: {plan: pro}
quota:
  enabled: true
  default_plan: free
  plans:
    free: {limits: ['1000/s']}
    pro: {limits: ['10000/s'], mode: batched, batch_interval: 100ms}
"""
NAME = "tenantgate_quota_batched_overadmission_bound"


def shown() -> dict[tuple[str, str, str], float]:
    return {(s.labels["plan"], s.labels["bucket"], s.labels["tenant"]): s.value
            for family in REGISTRY.collect() if family.name == NAME for s in family.samples}


@pytest.fixture(autouse=True)
def secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TG_QUOTA_TEST_SECRET", "x" * 40)


async def test_tenants_own_batched_plans_have_their_own_series() -> None:
    # Only the configured plans were shown: acme's override (ten times pro's rate) and
    # globex's (free, made batched) had no series, and acme's read as pro's.
    limiter = Limiter(parse_config(CONFIG), MemoryStore())
    await limiter.start()
    try:
        assert shown() == {("pro", "pro-1s", ""): 1000.0, ("pro", "pro-1s", "acme"): 10000.0,
                           ("free", "free-1s", "globex"): 50.0}
    finally:
        await limiter.close()
    assert shown() == {}


async def test_a_reload_replaces_the_series_and_the_old_limiter_closing_keeps_them() -> None:
    old = Limiter(parse_config(CONFIG), MemoryStore())
    await old.start()
    exact = CONFIG.replace("mode: batched, batch_interval: 100ms", "mode: exact").replace(
        "globex: {plan: free, overrides: {mode: batched}}", "globex: {plan: free}")
    new = Limiter(parse_config(exact), MemoryStore())
    await new.start()
    assert shown() == {}  # every plan exact now: no series of the old config is left
    await old.close()
    renewed = Limiter(parse_config(CONFIG), MemoryStore())
    await renewed.start()
    await new.close()  # the replaced limiter closing must not clear its successor's series
    assert ("pro", "pro-1s", "") in shown()
    await renewed.close()


async def test_a_limiter_closed_without_taking_over_leaves_the_running_ones_series() -> None:
    # A reload whose new runtime failed to start closes its limiter while the old one goes
    # on deciding: the old one's bounds must stay shown.
    running = Limiter(parse_config(CONFIG), MemoryStore())
    await running.start()
    exact = CONFIG.replace("mode: batched, batch_interval: 100ms", "mode: exact")
    failed = Limiter(parse_config(exact), MemoryStore())
    await failed.start()
    await failed.close()
    assert ("pro", "pro-1s", "") in shown()
    await running.close()
    assert shown() == {}


async def test_a_closed_limiter_is_not_kept_alive_by_the_gauge() -> None:
    limiter = Limiter(parse_config(CONFIG), MemoryStore())
    await limiter.start()
    await limiter.close()
    gone = weakref.ref(limiter)
    del limiter
    gc.collect()
    assert gone() is None


async def test_endpoint_rules_buckets_have_series_too() -> None:
    # Only the plan's own limits were shown, though an endpoint rule's bucket is batched with
    # an allowance of its own (here 50 per second at 1 s, beside the plan's 100).
    config = CONFIG.replace(
        "pro: {limits: ['10000/s'], mode: batched, batch_interval: 100ms}",
        "pro: {limits: ['10000/s'], mode: batched, batch_interval: 100ms}\n"
        "    edge: {limits: ['100/s'], mode: batched, batch_interval: 1s,\n"
        "           endpoints: [{name: w, methods: [POST], limits: ['50/s']}]}")
    limiter = Limiter(parse_config(config), MemoryStore())
    await limiter.start()
    try:
        series = {k: v for k, v in shown().items() if k[0] == "edge"}
        assert series == {("edge", "edge-1s", ""): 100.0, ("edge", "w-1s", ""): 50.0}
    finally:
        await limiter.close()
