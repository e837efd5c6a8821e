"""GCRA, plans to buckets, endpoint rules, overrides, headers and the breaker (embedded store)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tenantgate.config.load import parse_config
from tenantgate.config.model import Config
from tenantgate.config.paths import fold
from tenantgate.config.quota import PlanConfig, RedisConfig, period_label
from tenantgate.memo import MAX_MEMO_PATH_CHARS
from tenantgate.quota import Limiter, build_limiter
from tenantgate.quota.breaker import CircuitBreaker
from tenantgate.quota.headers import deny_headers, rate_headers
from tenantgate.quota.limiter import (
    MAX_HELD_MEMOS,
    OverLimitCache,
    compile_plan,
    degraded_bucket,
)
from tenantgate.quota.memory import MemoryStore
from tenantgate.quota.paths import compile_path
from tenantgate.quota.redis import SharedStores
from tenantgate.quota.store import Bucket, BucketState, Outcome

SECOND = 1_000_000
BASE = """
context:
  active_key: k1
  keys: [{id: k1, secret: {fromEnv: TG_QUOTA_TEST_SECRET}}]
tenants:
  registry:
    acme: {plan: free}
    big: {plan: free, overrides: {limits: ['100/day'], burst: 50}}
quota:
  enabled: true
  default_plan: free
  plans:
    free:
      limits: ['10/day']
      endpoints:
        - {name: writes, methods: [POST, PUT], path: '/api/**', limits: ['3/day']}
"""


@pytest.fixture
def config(monkeypatch: pytest.MonkeyPatch) -> Config:
    monkeypatch.setenv("TG_QUOTA_TEST_SECRET", "x" * 40)
    return parse_config(BASE)


@pytest.fixture
def limiter(config: Config) -> Limiter:
    built = Limiter(config, MemoryStore())  # a private store: tests must not share buckets
    return built


def bucket(key: str = "k", limit: int = 10, period: float = 1.0, burst: int = 10) -> Bucket:
    return Bucket(key, "b", limit, period, burst)


def test_burst_is_admitted_at_once_then_the_rate_applies() -> None:
    store, b = MemoryStore(), bucket(burst=5)
    admitted = [store.acquire_now([b], 1, 0).admitted for _ in range(6)]
    assert admitted == [True] * 5 + [False]
    assert not store.acquire_now([b], 1, SECOND // 10 - 1).admitted
    assert store.acquire_now([b], 1, SECOND // 10).admitted  # one emission interval later


def test_no_double_burst_at_a_window_edge() -> None:
    # A fixed window would admit 10 at t=0.999 s and 10 more at t=1.0 s; GCRA admits 10 + 0.
    store, b = MemoryStore(), bucket()
    edge = SECOND - 1000
    first = sum(store.acquire_now([b], 1, edge).admitted for _ in range(10))
    second = sum(store.acquire_now([b], 1, SECOND).admitted for _ in range(10))
    assert (first, second) == (10, 0)


def test_a_denial_charges_no_bucket() -> None:
    store, wide, narrow = MemoryStore(), bucket("wide", burst=10), bucket("narrow", burst=1)
    assert store.acquire_now([wide, narrow], 1, 0).admitted
    denied = store.acquire_now([wide, narrow], 1, 0)
    assert not denied.admitted
    assert denied.states[0].retry_us == 0 and denied.states[1].retry_us > 0
    assert [store.acquire_now([wide], 1, 0).admitted for _ in range(10)] == [True] * 9 + [False]


def test_remaining_and_reset_follow_the_bucket() -> None:
    store, b = MemoryStore(), bucket(limit=10, period=10.0, burst=4)
    outcome = store.acquire_now([b], 1, 0)
    assert (outcome.states[0].remaining, outcome.states[0].reset_us) == (3, SECOND)
    outcome = store.acquire_now([b], 3, 0)
    assert (outcome.states[0].remaining, outcome.states[0].reset_us) == (0, 4 * SECOND)


@pytest.mark.parametrize(("pattern", "path", "hit"), [
    ("/api/**", "/api", True), ("/api/**", "/api/a/b", True), ("/api/**", "/apix", False),
    ("/items/*", "/items/7", True), ("/items/*", "/items/7/x", False),
    ("/t/{tenant}/x", "/t/acme/x", True), ("/**", "/", True), ("/a", "/a/", True),
    ("/api/**", "/API/a", True), ("/Items/*", "/items/7", True),  # case cannot dodge a rule
    ("/caf%C3%A9/*", "/CAF%C3%89/1", True),  # nor the case of an escaped non-ASCII letter
    ("/caf%C3%A9/*", "/caf%C3%A8/1", False),
])
def test_path_patterns(pattern: str, path: str, hit: bool) -> None:
    # Paths are matched in policy's folded form (CompiledPlan.buckets folds them).
    assert compile_path(pattern).matches(fold(path)) is hit


async def test_writes_count_against_their_rule_and_the_plan(limiter: Limiter) -> None:
    plan = limiter.plan_for("acme", "free", True)
    assert plan is not None
    writes = [(await limiter.check(plan, "acme", "POST", "/api/x")).admitted for _ in range(4)]
    assert writes == [True, True, True, False]
    reads = [(await limiter.check(plan, "acme", "GET", "/api/x")).admitted for _ in range(8)]
    assert reads == [True] * 7 + [False]  # 10 per day: 3 writes + 7 reads


async def test_remembered_buckets_follow_method_path_and_tenant(limiter: Limiter) -> None:
    # Which buckets apply is remembered per request shape; a long path is decided afresh.
    plan = limiter.plan_for("acme", "free", True)
    assert plan is not None
    long_write = "/api/" + "x" * MAX_MEMO_PATH_CHARS
    for path in ("/api/x", long_write):
        verdict = await limiter.check(plan, "acme", "POST", path)
        assert [b.name for b in verdict.buckets] == ["free-86400s", "writes-86400s"]
        assert all("{t:acme}" in b.key for b in verdict.buckets)
        verdict = await limiter.check(plan, "globex", "GET", path)
        assert [b.name for b in verdict.buckets] == ["free-86400s"]
        assert all("{t:globex}" in b.key for b in verdict.buckets)


async def test_remembered_buckets_are_bounded(limiter: Limiter) -> None:
    plan = limiter.plan_for("acme", "free", True)
    assert plan is not None
    for i in range(MAX_HELD_MEMOS + 10):
        limiter.check_local(plan, "acme", "GET", f"/p/{i}")
    assert 0 < len(limiter._held) <= MAX_HELD_MEMOS  # private: the bound is what is tested


async def test_a_plan_from_elsewhere_gets_its_own_buckets_every_time(limiter: Limiter) -> None:
    # Only the Limiter's own plans are remembered (by id, which a freed plan's successor may
    # reuse): plans compiled on the fly must each count with their own limits.
    for limit in range(1, 40):
        plan = compile_plan("adhoc", PlanConfig.model_validate({"limits": [f"{limit}/day"]}),
                            "closed")
        verdict = await limiter.check(plan, "acme", "GET", "/")
        assert [b.limit for b in verdict.buckets] == [limit]
    assert not limiter._held  # private: none of them was remembered under a reusable id


async def test_tenants_do_not_share_buckets(limiter: Limiter) -> None:
    plan = limiter.plan_for("anyone", None, False)
    assert plan is not None and plan.name == "free"
    for _ in range(10):
        await limiter.check(plan, "noisy", "GET", "/")
    assert not (await limiter.check(plan, "noisy", "GET", "/")).admitted
    assert (await limiter.check(plan, "quiet", "GET", "/")).admitted


async def test_overrides_replace_plan_values(limiter: Limiter) -> None:
    plan = limiter.plan_for("big", "free", True)
    assert plan is not None
    assert [(s.limit, s.burst) for s in plan.specs] == [(100, 50)]
    assert len(plan.rules) == 1  # endpoints not overridden: the plan's stay


async def test_denial_headers_say_when_to_retry(limiter: Limiter) -> None:
    plan = limiter.plan_for("acme", "free", True)
    assert plan is not None
    for _ in range(10):
        await limiter.check(plan, "acme", "GET", "/")
    verdict = await limiter.check(plan, "acme", "GET", "/")
    headers = dict(deny_headers(verdict))
    assert headers["retry-after"] == "8640"  # one emission interval of 10/day
    assert headers["ratelimit-policy"] == '"free-86400s";q=10;w=86400'
    assert headers["ratelimit"] == '"free-86400s";r=0;t=86400'
    assert headers["x-ratelimit-limit"] == "10, 10;w=86400"
    assert headers["x-ratelimit-remaining"] == "0"


async def test_allow_headers_report_the_tightest_bucket(limiter: Limiter) -> None:
    plan = limiter.plan_for("acme", "free", True)
    assert plan is not None
    verdict = await limiter.check(plan, "acme", "POST", "/api/x")
    headers = dict(rate_headers(verdict))
    assert headers["ratelimit"] == '"writes-86400s";r=2;t=28800'
    assert headers["ratelimit-policy"] == ('"free-86400s";q=10;w=86400, '
                                           '"writes-86400s";q=3;w=86400')


@pytest.mark.parametrize("headers_on_allow", [True, False])
async def test_batched_allows_carry_bucket_states_when_headers_are_sent(
        monkeypatch: pytest.MonkeyPatch, headers_on_allow: bool) -> None:
    # The batched mirrors admit without the store; a verdict that feeds rate-limit headers
    # must still name its buckets and their states (the quicker yes-only path has none).
    monkeypatch.setenv("TG_QUOTA_TEST_SECRET", "x" * 40)
    config = parse_config(BASE.replace("      limits: ['10/day']", "      limits: ['10/day']\n"
                                       "      mode: batched")
                          + f"  response_headers_on_allow: {str(headers_on_allow).lower()}\n")
    limiter = Limiter(config, MemoryStore())
    plan = limiter.plan_for("acme", "free", True)
    assert plan is not None and plan.batched
    first = await limiter.check(plan, "acme", "GET", "/")  # the store decides, mirrors learn
    local = limiter.check_local(plan, "acme", "GET", "/")
    assert first.admitted and local is not None and local.admitted
    if headers_on_allow:
        assert dict(rate_headers(local))["ratelimit"] == '"free-86400s";r=8;t=17280'
    else:
        assert local.outcome is None  # yes, and nothing more was computed


async def test_over_limit_cache_answers_without_the_store(limiter: Limiter) -> None:
    plan = limiter.plan_for("acme", "free", True)
    assert plan is not None
    for _ in range(11):
        await limiter.check(plan, "acme", "GET", "/")
    calls = 0
    real = limiter.store.acquire

    async def counting(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        return await real(*args, **kwargs)  # type: ignore[arg-type]

    limiter.store.acquire = counting  # type: ignore[method-assign]
    assert not (await limiter.check(plan, "acme", "GET", "/")).admitted
    assert calls == 0


def test_degraded_share_is_limit_over_replicas() -> None:
    share = degraded_bucket(bucket(limit=100, period=1.0, burst=30), 3)
    assert share.interval_us == 30_000 and share.burst == 10


def test_breaker_opens_after_failures_then_one_probe_passes() -> None:
    now = [0.0]
    breaker = CircuitBreaker(failures=2, open_for=1.0, clock=lambda: now[0])
    breaker.failure()
    assert breaker.allow()
    breaker.failure()
    assert not breaker.allow()
    now[0] = 1.0
    assert breaker.allow() and not breaker.allow()  # exactly one probe while half-open
    breaker.failure()
    assert not breaker.allow()
    now[0] = 2.0
    assert breaker.allow()
    breaker.success()
    assert breaker.allow() and breaker.allow()


def test_breaker_counts_calls_that_failed_together_once() -> None:
    now = [0.0]
    breaker = CircuitBreaker(failures=2, open_for=1.0, clock=lambda: now[0])
    started = [breaker.clock() for _ in range(3)]  # three calls in flight
    now[0] = 0.5
    for at in started:  # one stall fails them all
        breaker.failure(at)
    assert breaker.allow()  # one failure so far
    breaker.failure(breaker.clock())  # a call begun after it: a second failure
    assert not breaker.allow()


def test_breaker_probe_is_not_ended_by_an_older_call_failing() -> None:
    now = [0.0]
    breaker = CircuitBreaker(failures=1, open_for=1.0, clock=lambda: now[0])
    old = breaker.clock()
    now[0] = 0.1
    breaker.failure(breaker.clock())  # opens
    now[0] = 2.0
    assert breaker.allow()  # the probe
    breaker.failure(old)  # a call from before the opening fails late: not the probe's answer
    assert not breaker.allow()  # still one probe at a time
    breaker.success()  # the probe's answer closes it
    assert breaker.allow()


def test_build_limiter_reuses_the_embedded_store_across_rebuilds(config: Config) -> None:
    first, second = build_limiter(config), build_limiter(config)
    assert first is not None and second is not None
    assert first.store is second.store



async def test_a_rotated_redis_password_gets_its_own_connection(tmp_path: Path) -> None:
    # SIGHUP rebuilds share the Redis store of an equal config; a password changed in its
    # file must not be mistaken for an equal config (the dump leaves the value out).
    def redis_config(password: str) -> RedisConfig:
        (tmp_path / "redis.pw").write_text(password)
        return RedisConfig.model_validate(
            {"url": "redis://127.0.0.1:1/0", "password": {"fromFile": "redis.pw"}},
            context={"base_dir": str(tmp_path)})

    configs = [redis_config("first-password"), redis_config("first-password"),
               redis_config("rotated-password")]
    shared = SharedStores()
    first, again, rotated = (shared.acquire_redis(c) for c in configs)
    assert again is first and rotated is not first
    for config in configs:
        await shared.release_redis(config)


@pytest.mark.parametrize("limit, interval", [(10, 100_000), (3, 333_334), (700_000, 2),
                                             (1_000_000, 1), (10_000_000, 1)])
def test_emission_interval_rounds_toward_fewer_admissions(limit: int, interval: int) -> None:
    # Whole µs, rounded up: 700000/s is enforced as 500000/s, never as 1000000/s.
    assert bucket(limit=limit, burst=1).interval_us == interval


def test_a_high_rate_admits_no_more_than_configured() -> None:
    store, b = MemoryStore(), bucket(limit=700_000, burst=1)
    admitted = sum(store.acquire_now([b], 1, now).admitted for now in range(1000))
    assert admitted <= 700  # 1000 µs of 700000/s


def test_build_limiter_builds_plans_and_reads_rate_limit_files_once(
        config: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    """It builds them to validate before taking a store, then hands them to the Limiter."""
    import tenantgate.quota as quota
    import tenantgate.quota.limiter as limiter_module

    calls: list[str] = []
    for name in ("tenant_plans", "load_domains"):
        original = getattr(limiter_module, name)

        def counted(*args: object, _name: str = name, _original: object = original) -> object:
            calls.append(_name)
            return _original(*args)  # type: ignore[operator]
        monkeypatch.setattr(limiter_module, name, counted)
        monkeypatch.setattr(quota, name, counted)
    built = build_limiter(config)
    assert built is not None and set(built.tenant_plans) == {"big"}  # the one with overrides
    assert sorted(calls) == ["load_domains", "tenant_plans"]


def test_build_limiter_keeps_degraded_buckets_across_rebuilds(config: Config) -> None:
    # A SIGHUP during a Redis outage must not hand every tenant a fresh local burst.
    first, second = build_limiter(config), build_limiter(config)
    assert first is not None and second is not None
    assert first._degraded is second._degraded


def test_a_changed_max_local_entries_is_reported_not_silently_ignored(
        config: Config, caplog: pytest.LogCaptureFixture) -> None:
    first = build_limiter(config)
    changed = config.model_copy(update={"quota": config.quota.model_copy(
        update={"max_local_entries": config.quota.max_local_entries + 1})})
    with caplog.at_level("WARNING", logger="tenantgate.quota"):
        second = build_limiter(changed)
    assert first is not None and second is not None and first.store is second.store
    assert "max_local_entries changed" in caplog.text


async def test_a_cached_denial_names_the_bucket_that_denied(limiter: Limiter) -> None:
    # writes (3/day) runs out while the plan (10/day) has 7 left: a denial answered by the
    # over-limit cache must say what the store said, not "plan exhausted, 0 left".
    plan = limiter.plan_for("acme", "free", True)
    assert plan is not None
    for _ in range(3):
        await limiter.check(plan, "acme", "POST", "/api/x")
    from_store = dict(deny_headers(await limiter.check(plan, "acme", "POST", "/api/x")))
    from_cache = dict(deny_headers(await limiter.check(plan, "acme", "POST", "/api/x")))
    assert from_store["ratelimit"] == '"writes-86400s";r=0;t=86400'
    assert from_cache["x-ratelimit-limit"] == "3, 3;w=86400"
    assert from_cache["ratelimit"].startswith('"writes-86400s";r=0;t=')
    # t= is when the bucket is full again, not when one request would pass.
    assert int(from_cache["ratelimit"].rsplit("=", 1)[1]) > int(from_cache["retry-after"])


def test_a_full_store_does_not_forget_a_busy_bucket() -> None:
    # Forgetting a bucket resets it to full. The bucket charged just now must not be the one
    # forgotten because it was first charged long ago: that would hand the busiest tenant a
    # fresh burst whenever others fill the store.
    store, busy = MemoryStore(max_entries=100), bucket("busy", limit=2, period=86400.0, burst=2)
    assert store.acquire_now([busy], 1, 0).admitted
    for i in range(1022):
        store.acquire_now([bucket(f"other{i}", period=86400.0)], 1, 0)
    assert store.acquire_now([busy], 1, 0).admitted  # its last hit of the day
    store.acquire_now([bucket("one-more", period=86400.0)], 1, 0)
    assert len(store) <= 125  # a quarter past the bound at most
    assert not store.acquire_now([busy], 1, 0).admitted


def test_the_embedded_store_keeps_about_its_bound_and_forgets_the_oldest() -> None:
    store = MemoryStore(max_entries=2000)
    day = [bucket(key=f"tg:{{t:t{i}}}:plan:86400", limit=1, period=86400.0, burst=1)
           for i in range(5000)]
    for b in day:  # distinct buckets that stay live for a day
        store.acquire_now([b], 1, 0)
        assert len(store) <= 2000 * 5 // 4  # it reached ~1.7x the bound before
    assert store.acquire_now([day[-1]], 1, 0).admitted is False  # the newest kept
    assert store.acquire_now([day[0]], 1, 0).admitted is True  # the oldest forgotten (full)


def test_a_full_over_limit_cache_still_takes_a_new_denial() -> None:
    """Full of live entries, it used to rebuild itself on every denial and cache nothing, so
    a flooding tenant reached the store every time."""
    cache = OverLimitCache(max_entries=4)
    denied = Outcome(False, (BucketState(0, 3_600_000_000, 3_600_000_000),), 0)
    buckets = [bucket(key=f"k{i}", limit=1, period=86400.0, burst=1) for i in range(6)]
    for b in buckets:
        cache.remember([b], denied, 1)
    assert cache.check([buckets[-1]], 1) is not None
    assert cache.check([buckets[0]], 1) is None  # the oldest made room


def test_the_over_limit_cache_holds_a_wait_at_most_one_refill(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A wait longer than an exact decision leaves (Redis' clock stepped back an hour, or what
    batched replicas left past full) is held here one refill and this cost's interval, then
    the store is asked again: held on the local clock, it outlived a step Redis got over.
    While held it reports the store's own wait (744efdb reported the capped one instead)."""
    clock = [0]
    monkeypatch.setattr("tenantgate.quota.limiter.monotonic_us", lambda: clock[0])
    cache, b = OverLimitCache(max_entries=100), bucket(limit=60, period=60.0, burst=10)
    hour, held = 3_600_000_000, b.tolerance_us + b.interval_us  # 11 s
    cache.remember([b], Outcome(False, (BucketState(0, hour, hour - 10_000_000),), 0), 1)
    clock[0] = held - 1
    cached = cache.check([b], 1)
    assert cached is not None
    assert cached[0].retry_us == hour - 10_000_000 - clock[0]
    assert cached[0].reset_us == hour - clock[0]
    clock[0] = held
    assert cache.check([b], 1) is None


def test_a_cached_denial_reports_what_remains_as_the_store_did() -> None:
    # A cost above what remains is denied with 4 left: the cache said 0 on the next call.
    cache, b = OverLimitCache(max_entries=100), bucket(limit=5, period=86400.0, burst=5)
    cache.remember([b], Outcome(False, (BucketState(4, b.interval_us, 2 * b.interval_us),),
                                0), 6)
    cached = cache.check([b], 6)
    assert cached is not None and cached[0].remaining == 4


def test_long_periods_are_labelled_exactly() -> None:
    # `:g` wrote 30 days as 2.592e+06, and 1000000 s and 1000001 s as one label (one bucket).
    assert [period_label(p) for p in (0.5, 60.0, 2_592_000.0, 1_000_000.0, 1_000_001.0)] == [
        "0.5", "60", "2592000", "1000000", "1000001"]
