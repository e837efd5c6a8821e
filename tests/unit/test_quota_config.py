"""Quota configuration: rates as operators write them, plans, overrides, key-path errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from tenantgate.cli import main
from tenantgate.config.load import parse_config
from tenantgate.config.model import Config
from tenantgate.config.quota import Rate
from tenantgate.errors import ConfigError
from tenantgate.quota import Limiter, build_limiter
from tenantgate.quota.headers import rate_headers
from tenantgate.quota.memory import MemoryStore

BASE = """
context:
  active_key: k1
  keys: [{id: k1, secret: {fromEnv: TG_QUOTA_TEST_SECRET}}]
"""


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TG_QUOTA_TEST_SECRET", "x" * 40)


def load(quota_yaml: str, extra: str = "") -> Config:
    return parse_config(BASE + extra + "quota:\n" + quota_yaml)


def issues(quota_yaml: str, extra: str = "") -> list[str]:
    with pytest.raises(ConfigError) as err:
        load(quota_yaml, extra)
    return err.value.issues


@pytest.mark.parametrize(("text", "count", "period"), [
    ("100/s", 100, 1.0), ("6000/min", 6000, 60.0), ("1000000/day", 1_000_000, 86400.0),
    ("50/10s", 50, 10.0), ("3/hour", 3, 3600.0), ("5 / 500ms", 5, 0.5),
], ids=lambda v: str(v))
def test_rates_are_written_the_way_operators_think(text: str, count: int, period: float) -> None:
    plan = load(f"  plans: {{p: {{limits: ['{text}']}}}}\n").quota.plans["p"]
    assert plan.limits[0].rate == Rate(count, period, text.strip())


@pytest.mark.parametrize("text", ["100", "100/fortnight", "-1/s", "0/s", "x/s", "100/0s"])
def test_a_bad_rate_names_its_key_path(text: str) -> None:
    found = issues(f"  plans: {{free: {{limits: ['{text}']}}}}\n")
    assert len(found) == 1
    assert found[0].startswith("quota.plans.free.limits[0]")


@pytest.mark.parametrize(("limit", "problem"), [
    ("'4294967296/s'", "at most 4294967295"),  # Envoy's rate-limit API carries a uint32
    ("'1/100000000000day'", "at most 366 days"),  # a 1-µs-per-hit clock that overflows
    ("{rate: '1/day', burst: 4294967296}", "less than or equal to 4294967295"),
    ("{rate: '1/day', burst: 10000000}", "10 years to refill"),
])
def test_absurd_counts_and_periods_are_refused_before_they_overflow_a_bucket(
        limit: str, problem: str) -> None:
    found = issues(f"  plans: {{free: {{limits: [{limit}]}}}}\n")
    assert len(found) == 1 and found[0].startswith("quota.plans.free.limits[0]"), found
    assert problem in found[0]


def test_a_plan_burst_is_held_to_the_same_bound_on_the_limit_it_applies_to() -> None:
    found = issues("  plans: {free: {limits: ['1/day'], burst: 10000000}}\n")
    assert found == ["quota.plans.free: burst would take more than 10 years to refill "
                     "(burst x period / count)"]


@pytest.mark.parametrize(("rule", "problem"), [
    ("{name: pdf, path: '/files/*.pdf', limits: ['1/s']}", "stand for whole segments"),
    ("{name: v, path: '/api/v{n}/items', limits: ['1/s']}", "stand for whole segments"),
    ("{name: none, methods: [], limits: ['1/s']}", "list at least one method"),
    # `%3A` would match neither form: `:`, and the escape, which Check refuses (policy.py).
    ("{name: x, path: '/v1/{p}/jobs%3Aexport', limits: ['1/s']}",
     "write ':' as itself, not as %3A"),
    ("{name: x, path: '/v1/{p}/<all>', limits: ['1/s']}",
     "write '<' as %3C, as Envoy passes it to Check"),
])
def test_endpoint_rules_that_would_never_apply_are_refused(rule: str, problem: str) -> None:
    # Taken literally, these matched no request, so their limits silently never applied.
    found = issues(f"  plans: {{free: {{endpoints: [{rule}]}}}}\n")
    assert len(found) == 1 and found[0].startswith("quota.plans.free.endpoints[0]"), found
    assert problem in found[0]


def test_whole_segment_wildcards_and_names_in_endpoint_paths_still_load() -> None:
    plan = load("  plans: {free: {endpoints: [{name: a, path: '/t/{id}/*/x/**', "
                "limits: ['1/s']}]}}\n").quota.plans["free"]
    assert plan.endpoints[0].path == "/t/{id}/*/x/**"


def test_unknown_key_in_a_plan_is_an_error() -> None:
    assert issues("  plans: {free: {limits: [1/s], brust: 3}}\n") == [
        "quota.plans.free.brust: unknown key (did you mean 'burst'?)"]


def test_a_redis_block_without_store_redis_is_an_error_not_ignored() -> None:
    # Ignored, every replica would enforce the whole limit on its own embedded store.
    assert issues("  redis: {url: 'redis://127.0.0.1:6379'}\n") == [
        "quota: redis is set but store is memory (the default), so it would be ignored: set "
        "store: redis to share quotas through Redis, or remove redis"]
    assert load("  store: redis\n  redis: {url: 'redis://127.0.0.1:6379'}\n").quota.store \
        == "redis"


def test_rate_limit_files_without_the_quota_are_an_error_not_a_silent_ok() -> None:
    # Without the quota's store ShouldRateLimit answers OK to every call, files unread.
    assert issues("  enabled: false\n  ratelimit_service: {config_files: [rl.yaml]}\n") == [
        "quota: ratelimit_service.config_files is set but enabled is false, so ShouldRateLimit "
        "would answer OK to every call without reading them: set enabled: true, or remove "
        "ratelimit_service"]
    assert not load("  enabled: false\n  ratelimit_service: {config_files: []}\n").quota.enabled


ON = "  enabled: true\n"
MEMORY_DEGRADED = "degraded, but quota.store is memory (the default), which runs in the process " \
    "and never fails, so degraded mode would never apply: set quota.store: redis, or another " \
    "failure_mode"
NEEDS_REPLICAS = "degraded needs quota.replicas (the most tenantgate processes sharing the " \
    "store; autoscaled: the maximum)"
TENANT_DEGRADED = "tenants:\n  registry:\n    acme: {overrides: {failure_mode: degraded}}\n"


@pytest.mark.parametrize(("quota_yaml", "tenants", "at"), [
    ("  failure_mode: degraded\n", "", "quota.failure_mode"),
    ("  plans: {free: {limits: [1/s], failure_mode: degraded}}\n", "",
     "quota.plans.free.failure_mode"),
    ("", TENANT_DEGRADED, "tenants.registry.acme.overrides.failure_mode"),
])
def test_degraded_needs_a_replica_count_named_at_its_key(
        quota_yaml: str, tenants: str, at: str) -> None:
    # The error said `quota: failure_mode degraded ...`, not which key was degraded.
    assert issues(ON + "  store: redis\n" + quota_yaml, tenants) == [f"{at}: {NEEDS_REPLICAS}"]
    assert load(ON + "  store: redis\n  replicas: 1\n" + quota_yaml, tenants).quota.replicas == 1


@pytest.mark.parametrize("failure_mode", ["degraded", "closed", "open"])
def test_more_than_one_process_on_the_memory_store_is_an_error(failure_mode: str) -> None:
    # Each process counts in its own memory: two of them admitted twice every limit, and
    # check-config said ok.
    for store in ("", "  store: memory\n"):
        assert issues(f"{ON}{store}  replicas: 2\n  failure_mode: {failure_mode}\n") == [
            "quota.replicas: 2, but store is memory (the default), which counts in each process "
            "apart: 2 processes would give every tenant 2 times its limits. Set store: redis "
            "(with redis.url) to share quotas, or run one process (replicas: 1)"]
    assert load(ON + "  store: memory\n  replicas: 1\n").quota.replicas == 1
    assert load(ON + "  store: redis\n  replicas: 2\n").quota.replicas == 2


@pytest.mark.parametrize(("quota_yaml", "tenants", "at"), [
    ("  failure_mode: degraded\n  replicas: 1\n", "", "quota.failure_mode"),
    ("  replicas: 1\n  plans: {free: {limits: [1/s], failure_mode: degraded}}\n", "",
     "quota.plans.free.failure_mode"),
    # Refused in quota and in a plan, yet accepted in a tenant's overrides (the chart refused it).
    ("  replicas: 1\n", TENANT_DEGRADED, "tenants.registry.acme.overrides.failure_mode"),
])
def test_degraded_on_the_memory_store_is_an_error_at_its_key(
        quota_yaml: str, tenants: str, at: str) -> None:
    # The in-process store never fails, so the degraded buckets could never decide. The error
    # was reported at `quota:` for the quota's and a plan's failure_mode.
    assert issues(ON + quota_yaml, tenants) == [f"{at}: {MEMORY_DEGRADED}"]
    assert load(ON + "  store: redis\n" + quota_yaml, tenants).quota.replicas == 1


@pytest.mark.parametrize(("quota_yaml", "tenants"), [
    ("  replicas: 3\n", ""),
    ("  replicas: 3\n  failure_mode: degraded\n", ""),
    ("  failure_mode: degraded\n", ""),
    ("  plans: {free: {limits: [1/s], failure_mode: degraded}}\n", ""),
    ("", TENANT_DEGRADED),
    ("  store: redis\n  failure_mode: degraded\n", ""),
])
def test_the_memory_store_and_degraded_checks_wait_for_the_quota_to_be_on(
        quota_yaml: str, tenants: str) -> None:
    # Nothing is enforced with the quota off, and the chart renders these (its checks need
    # quota.enabled): tenantgate refused them, so the pods crash-looped on upgrade.
    config = load("  enabled: false\n" + quota_yaml, tenants)
    assert not config.quota.enabled


BATCHED = ("  enabled: true\n"
           "  plans: {free: {limits: [1/s]}, bulk: {limits: [1/s], mode: batched}}\n",
           "tenants:\n  registry:\n    acme: {plan: free, overrides: {mode: batched}}\n")


def batched_warning(at: str) -> str:
    return (f"{at}: batched saves round trips to a shared store, and quota.store is memory, in "
            "the process: it saves none and adds work (use exact)")


def test_batched_on_the_memory_store_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    # Accepted (the benches time the batched path without Redis), but it saves nothing there.
    plans, tenants = BATCHED
    assert load(plans, tenants).quota.plans["bulk"].mode == "batched"
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        batched_warning("quota.plans.bulk.mode"),
        batched_warning("tenants.registry.acme.overrides.mode")]
    caplog.clear()
    load("  store: redis\n" + plans, tenants)
    assert not caplog.records
    # Quota off: nothing is enforced, so nothing to say (as the memory-store checks say nothing).
    load(plans.replace("  enabled: true\n", ""), tenants)
    assert not caplog.records


def test_check_config_prints_the_batched_warning_as_every_warning(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    # It was logged from the model's validator: check-config showed a bare line on stderr.
    plans, tenants = BATCHED
    path = tmp_path / "tenantgate.yaml"
    path.write_text(BASE + tenants + "quota:\n" + plans)
    assert main(["check-config", str(path)]) == 0
    out, err = capsys.readouterr()
    assert err == (f"{path}: warning: {batched_warning('quota.plans.bulk.mode')}\n"
                   f"{path}: warning: {batched_warning('tenants.registry.acme.overrides.mode')}"
                   "\n")
    assert out.startswith(f"{path}: ok (0 issuers, 1 tenants, 0 routes)")
    assert not caplog.records


def test_default_plan_must_exist() -> None:
    assert issues("  default_plan: gold\n  plans: {free: {limits: [1/s]}}\n") == [
        "quota: default_plan 'gold' is not among plans (free)"]


def test_sentinel_url_must_name_the_master() -> None:
    assert issues("  store: redis\n  redis: {url: 'redis+sentinel://127.0.0.1:26379'}\n") == [
        "quota.redis.url: a sentinel url names the master: redis+sentinel://host:port/mymaster"]


def test_tenant_overrides_are_typed_plan_values() -> None:
    found = issues("  plans: {free: {limits: [1/s]}}\n",
                   "tenants:\n  registry:\n    acme: {plan: free, overrides: {burst: 0}}\n")
    assert found == ["tenants.registry.acme.overrides.burst: Input should be greater than or "
                     "equal to 1"]


@pytest.mark.parametrize(("overrides", "expected"), [
    ("{batch_interval: 5s}", "tenants.registry.acme.overrides: batch_interval must be between "
                             "1ms and 1s"),
    ("{endpoints: [{name: w, limits: [1/s]}, {name: w, limits: [2/s]}]}",
     "tenants.registry.acme.overrides: endpoint rule names must be unique within a plan"),
    ("{limits: ['5/s', '50/1000ms']}",
     "tenants.registry.acme.overrides.limits: two limits with a period of 1s: give each "
     "period one limit (its burst sets how many pass at once)"),
])
def test_tenant_overrides_pass_the_checks_a_plan_does(overrides: str, expected: str) -> None:
    config = load("  enabled: true\n  plans: {free: {limits: [1/s]}}\n",
                  f"tenants:\n  registry:\n    acme: {{plan: free, overrides: {overrides}}}\n")
    with pytest.raises(ConfigError) as err:
        build_limiter(config)
    assert err.value.issues == [expected]


def test_registry_tenant_with_unknown_plan_fails_the_build() -> None:
    config = load("  enabled: true\n  plans: {free: {limits: [1/s]}}\n",
                  "tenants:\n  registry:\n    acme: {plan: gold}\n")
    with pytest.raises(ConfigError) as err:
        build_limiter(config)
    assert err.value.issues == ["tenants.registry.acme.plan: unknown plan 'gold' "
                                "(quota.plans has: free)"]


def test_disabled_quota_builds_no_limiter() -> None:
    assert build_limiter(load("  plans: {free: {limits: [1/s]}}\n")) is None


@pytest.mark.parametrize(("quota_yaml", "where"), [
    ("  plans: {p: {limits: [{rate: 5/s, burst: 5}, {rate: 100/s, burst: 20}]}}\n",
     "quota.plans.p.limits"),
    ("  plans: {p: {endpoints: [{name: w, limits: ['1/min', '10/60s']}]}}\n",
     "quota.plans.p.endpoints[0].limits"),
])
def test_two_limits_with_one_period_are_refused(quota_yaml: str, where: str) -> None:
    # Their buckets would share one key: only the looser limit's burst would count.
    [issue] = issues(quota_yaml)
    assert issue.startswith(f"{where}: two limits with a period of ")


def test_limits_with_different_periods_are_kept() -> None:
    plan = load("  plans: {p: {limits: ['5/s', '5/500ms', '100/min']}}\n").quota.plans["p"]
    assert [lim.rate.period for lim in plan.limits] == [1.0, 0.5, 60.0]


@pytest.mark.parametrize("key", ["timeout", "connect_timeout"])
def test_redis_timeouts_must_be_above_zero(key: str) -> None:
    assert issues(f"  store: redis\n  redis: {{{key}: 0s}}\n") == [
        f"quota.redis.{key}: Input should be greater than 0"]


@pytest.mark.parametrize("name", ['"a\\r\\nx-evil: 1"', '"pro plan"', '"p\\u00e9"', "''",
                                  "'" + "p" * 65 + "'"], ids=["crlf", "space", "non_ascii",
                                                              "empty", "too_long"])
def test_a_plan_name_must_be_fit_for_a_header(name: str) -> None:
    # A plan name is the bucket name in the ratelimit-policy and ratelimit response headers:
    # `a\r\nx-evil: 1` went into a header value. Rule names had this pattern already.
    [issue] = issues(f"  plans: {{{name}: {{limits: [1/s]}}}}\n")
    assert issue.startswith("quota.plans.")
    assert issue.endswith(": this name: String should match pattern '^[A-Za-z0-9_.-]{1,64}$'")
    assert "\n" not in issue and "\r" not in issue  # the name is quoted and escaped


async def test_a_period_in_milliseconds_is_labelled_cleanly_in_headers() -> None:
    # 700 x 0.001 is 0.7000000000000001 in floating point: the header said
    # "p-0.7000000000000001s".
    config = load("  enabled: true\n  default_plan: p\n  plans: {p: {limits: ['7/700ms', "
                  "'3/1100ms'], endpoints: [{name: w, limits: ['1/300ms']}]}}\n")
    assert [lim.rate.period for lim in config.quota.plans["p"].limits] == [0.7, 1.1]
    limiter = Limiter(config, MemoryStore())
    plan = limiter.plan_for("acme", None, True)
    assert plan is not None
    verdict = await limiter.check(plan, "acme", "GET", "/")
    assert dict(rate_headers(verdict))["ratelimit-policy"] == (
        '"p-0.7s";q=7;w=1, "p-1.1s";q=3;w=1, "w-0.3s";q=1;w=1')
    await limiter.close()


def test_a_redis_password_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    # redis-py takes the password as text: check-config passed it and serve (a store built
    # per Runtime) ended in a UnicodeDecodeError traceback.
    secret = tmp_path / "redis.pass"
    secret.write_bytes(b"\xff\xfepassword")
    found = issues(f"  redis: {{url: 'redis://127.0.0.1:6379/0', "
                   f"password: {{fromFile: '{secret}'}}}}\n")
    assert found == ["quota.redis.password: the password is not valid UTF-8"]
