"""Plans to buckets, and deciding over them: store, over-limit cache, batching, failure modes."""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import NamedTuple

from pydantic import ValidationError

from tenantgate.config.load import issue
from tenantgate.config.model import Config
from tenantgate.config.paths import fold
from tenantgate.config.quota import (
    EndpointRule,
    FailureMode,
    LimitConfig,
    PlanConfig,
    QuotaConfig,
    endpoint_named_like_plan,
    period_label,
)
from tenantgate.errors import ConfigError, QuotaStoreUnavailable
from tenantgate.memo import MAX_MEMO_PATH_CHARS, remember
from tenantgate.observe import quota as metrics
from tenantgate.observe.throttle import Throttle
from tenantgate.quota.batched import STORE_DOWN_WARN_EVERY, Batcher, allowance
from tenantgate.quota.memory import MemoryStore, monotonic_us
from tenantgate.quota.paths import PathPattern, compile_path
from tenantgate.quota.rls_config import Node, load_domains
from tenantgate.quota.store import Bucket, BucketState, Outcome, QuotaStore

log = logging.getLogger("tenantgate.quota")


@dataclass(frozen=True, slots=True)
class LimitSpec:
    scope: str  # "plan" or "ep:<rule name>": part of the store key
    name: str  # policy name for headers
    limit: int
    period: float
    burst: int

    def bucket(self, tenant_id: str) -> Bucket:
        # {t:<tenant>} is the Redis Cluster hash tag: one tenant's buckets share a slot, so
        # one script sees all of them. A `}` in an id only shortens the tag: keys stay distinct
        # and one tenant's keys still share their slot. The config allows one limit per period
        # in a plan or rule, so scope and period name one bucket.
        return Bucket(f"tg:{{t:{tenant_id}}}:{self.scope}:{period_label(self.period)}", self.name,
                      self.limit, self.period, self.burst)


@dataclass(frozen=True, slots=True)
class CompiledRule:
    methods: frozenset[str] | None
    path: PathPattern
    specs: tuple[LimitSpec, ...]
    head_allowance: bool = False  # HEAD is listed and GET is not: a limit written for HEAD
    head_from_get: bool = False  # HEAD is not listed but GET is: counted as a GET

    def matches(self, method: str, folded_path: str) -> bool:
        return ((self.methods is None or method in self.methods)
                and self.path.matches(folded_path))


@dataclass(frozen=True, slots=True)
class CompiledPlan:
    name: str
    specs: tuple[LimitSpec, ...]
    rules: tuple[CompiledRule, ...]
    batched: bool
    batch_interval: float
    failure_mode: FailureMode

    def buckets(self, tenant_id: str, method: str, path: str) -> list[Bucket]:
        specs = list(self.specs)
        if self.rules:
            folded = fold(path)
            matched = [rule for rule in self.rules if rule.matches(method, folded)]
            if method == "HEAD" and any(rule.head_allowance for rule in matched):
                # A rule written for HEAD alone governs it where it matches: the GET rules there
                # stop counting it, or a HEAD allowance would be capped by the GET limit. (A
                # rule listing GET and HEAD is no such allowance: GET limits still count HEAD.)
                matched = [rule for rule in matched if not rule.head_from_get]
            for rule in matched:
                specs.extend(rule.specs)
        return [s.bucket(tenant_id) for s in specs]


def _specs(scope: str, label: str, limits: Sequence[LimitConfig], burst: int | None
           ) -> tuple[LimitSpec, ...]:
    # The plan-level burst belongs to the shortest limit that has none of its own.
    open_limits = [lim for lim in limits if lim.burst is None]
    shortest = min(open_limits, key=lambda lim: lim.rate.period) if open_limits else None
    specs = []
    for lim in limits:
        cap = burst if lim is shortest and burst is not None else lim.capacity
        specs.append(LimitSpec(scope, f"{label}-{period_label(lim.rate.period)}s", lim.rate.count,
                               lim.rate.period, cap))
    return tuple(specs)


def compile_plan(name: str, plan: PlanConfig, default_failure: FailureMode) -> CompiledPlan:
    rules = tuple(_compile_rule(r) for r in plan.endpoints)
    return CompiledPlan(name, _specs("plan", name, plan.limits, plan.burst), rules,
                        plan.mode == "batched", plan.batch_interval,
                        plan.failure_mode or default_failure)


def _compile_rule(rule: EndpointRule) -> CompiledRule:
    listed = rule.methods or []
    return CompiledRule(_methods(rule.methods), compile_path(rule.path),
                        _specs(f"ep:{rule.name}", rule.name, rule.limits, None),
                        head_allowance="HEAD" in listed and "GET" not in listed,
                        head_from_get="GET" in listed and "HEAD" not in listed)


def _methods(listed: list[str] | None) -> frozenset[str] | None:
    if listed is None:
        return None
    # HEAD is a GET without the body (RFC 9110 9.3.2), and most frameworks run the GET handler
    # for it: a GET limit counts HEAD too, as a GET route rule governs it (policy.py).
    return frozenset(listed) | ({"HEAD"} if "GET" in listed else set())


@dataclass(slots=True)  # not frozen: built per Check (see quota.store.BucketState)
class Verdict:
    """A quota decision. `outcome` is None when the store failed and the failure mode decided."""

    admitted: bool
    buckets: tuple[Bucket, ...] = ()
    outcome: Outcome | None = None
    unavailable: bool = False  # fail closed: 503

    def governing(self) -> tuple[Bucket, BucketState] | None:
        """The bucket that decided: the one that denied longest, or the one with least left."""
        if self.outcome is None or not self.buckets:
            return None
        pairs = list(zip(self.buckets, self.outcome.states, strict=True))
        if not self.outcome.admitted:
            return max(pairs, key=lambda p: p[1].retry_us)
        return min(pairs, key=lambda p: p[1].remaining)


_NO_BUCKETS = Verdict(True)  # no limit applies to the request
_ADMITTED_LOCALLY = Verdict(True)  # by batched mirrors, states not asked for (no headers)
MAX_HELD_MEMOS = 10_000


def degraded_bucket(bucket: Bucket, replicas: int) -> Bucket:
    """This replica's share while the store is down: limit / replicas, burst / replicas."""
    return Bucket("deg:" + bucket.key, bucket.name, bucket.limit, bucket.period * replicas,
                  max(1, math.ceil(bucket.burst / replicas)))


class _HeldDenial(NamedTuple):
    """A cached denial, in µs of monotonic_us(); made only on a denial."""

    held_until: int  # asked of the store again from then on
    denied_cost: int  # the smallest cost denied: a cost as large is denied as well
    retry_at: int  # when the store's answer said a retry of that cost would pass
    full_at: int  # when the bucket is full again


class OverLimitCache:
    """Buckets known to deny until a moment: answered here without a store round trip.

    Exact, not approximate: a GCRA bucket that denies `cost` hits now keeps denying `cost` or
    more until its retry time, since nothing but time moves its theoretical arrival time back.
    A denial is held here at most one full refill plus the cost's emission (`_held_us`), then
    the store is asked again: a longer wait (what batched replicas left past full, or Redis'
    clock stepped back) is the store's to keep, so tenantgate admits as soon as Redis does. While
    held, a denial reports the denying bucket's retry, reset and remaining as the store would
    (its own answer, aged on this clock, the retry grown by the extra cost's interval).
    """

    def __init__(self, max_entries: int) -> None:
        self._until: dict[str, _HeldDenial] = {}
        self._max = max_entries

    def check(self, buckets: Sequence[Bucket], cost: int) -> tuple[BucketState, ...] | None:
        """Each bucket's state when a cached one denies `cost`; None when none does.

        Per bucket, so the headers name the bucket that denied (as the store's answer did),
        not whichever bucket comes first. A bucket not cached is reported full: its state is
        not known here, and it must not look like the one with least left (Envoy's
        x-ratelimit headers follow that one).
        """
        if not self._until:
            return None
        now, states, denied = monotonic_us(), [], False
        for bucket in buckets:
            cached = self._until.get(bucket.key)
            if cached is not None and cost >= cached.denied_cost and cached.held_until > now:
                denied = True
                # What the store says of it now: remaining as gcra.lua counts it on a denial.
                reset = max(0, cached.full_at - now)
                remaining = max(0, (bucket.tolerance_us - reset) // bucket.interval_us)
                # gcra.lua's retry is tat + cost x interval - tolerance - now: each hit past
                # the denied cost waits one interval more.
                retry = cached.retry_at - now + (cost - cached.denied_cost) * bucket.interval_us
                states.append(BucketState(remaining, reset, retry))
            else:
                states.append(BucketState(bucket.burst, 0, 0))
        return tuple(states) if denied else None

    def remember(self, buckets: Sequence[Bucket], outcome: Outcome, cost: int) -> None:
        now = monotonic_us()
        if len(self._until) >= self._max:
            live = {k: v for k, v in self._until.items() if v.held_until > now}
            # Full of live entries: forget the oldest quarter, not the new denial. Keeping
            # the full dict made every later denial rebuild it and cache nothing.
            if len(live) > self._max * 3 // 4:
                live = dict(islice(live.items(), len(live) - self._max * 3 // 4, None))
            self._until = live
        for bucket, state in zip(buckets, outcome.states, strict=True):
            if state.retry_us > 0:
                held = min(state.retry_us, _held_us(bucket, cost))
                self._until.pop(bucket.key, None)  # re-inserted: dict order is oldest first
                self._until[bucket.key] = _HeldDenial(now + held, cost, now + state.retry_us,
                                                      now + state.reset_us)


def _held_us(bucket: Bucket, cost: int) -> int:
    """The longest a denial of `cost` is held locally: the longest wait an exact decision can
    leave (one full refill and this cost's emission). Past it the store is asked again."""
    return bucket.tolerance_us + cost * bucket.interval_us


class Limiter:
    """Everything quota a Runtime needs; cheap to build, `start()` dials the store."""

    def __init__(self, config: Config, store: QuotaStore,
                 release: Callable[[], Awaitable[None]] | None = None,
                 degraded: MemoryStore | None = None, *,
                 built_plans: dict[str, CompiledPlan] | None = None,
                 built_domains: dict[str, Node] | None = None) -> None:
        """`built_plans`, `built_domains`: tenant_plans(config) and the rate-limit files, when
        the caller has built them already (build_limiter does, to validate first)."""
        q = config.quota
        self.config: QuotaConfig = q
        self.store = store
        self._release = release
        self.plans = {n: compile_plan(n, p, q.failure_mode) for n, p in q.plans.items()}
        self.tenant_plans = built_plans if built_plans is not None else tenant_plans(config)
        self.headers_on_allow = q.response_headers_on_allow
        self._cache = OverLimitCache(q.max_local_entries) if q.over_limit_cache else None
        # Degraded mode's local buckets; build_limiter passes one that outlives reloads.
        self._degraded = degraded if degraded is not None else MemoryStore(q.max_local_entries)
        self._replicas = q.replicas or 1
        batched = [p.batch_interval for p in self.plans.values() if p.batched] + [
            p.batch_interval for p in self.tenant_plans.values() if p.batched]
        self._batcher = (Batcher(store, min(batched), q.max_local_entries) if batched else None)
        self._store_down = Throttle(STORE_DOWN_WARN_EVERY)
        # A failure was said (a warning) and no acquire has answered since: the recovery is
        # said once for it. Set on any failure, a store failing every other call (a demoted
        # Redis still answering denials) said "available again" at request rate.
        self._store_was_down = False
        self._degraded_shown = metrics.Degraded()  # this limiter's part of the gauge
        self._may_degrade = "degraded" in {q.failure_mode, *(
            p.failure_mode for p in (*self.plans.values(), *self.tenant_plans.values()))}
        self._held: dict[tuple[object, ...], tuple[Bucket, ...]] = {}  # see _buckets_for
        self._own_plans = {id(p) for p in (*self.plans.values(), *self.tenant_plans.values())}
        self._max_held = min(q.max_local_entries, MAX_HELD_MEMOS)
        self.rls_domains = (built_domains if built_domains is not None
                            else load_domains(q.ratelimit_service.config_files))

    async def start(self) -> None:
        metrics.show_batched_bounds(self, self._batched_bounds())
        await self.store.start()
        # A store failing already (a reload while Redis is down) is degraded from the start,
        # as the limiter this one replaces still reports: not 0 until the next request.
        self._degraded_shown.set(self._may_degrade and self.store.failing)
        if self._batcher is not None:
            self._batcher.start()

    def _batched_bounds(self) -> list[tuple[str, str, str, float]]:
        plans = [("", p) for p in self.plans.values()] + list(self.tenant_plans.items())
        # Endpoint rules' buckets are batched too, each with its own allowance.
        return [(plan.name, spec.name, tenant, allowance(spec.bucket(""), plan.batch_interval))
                for tenant, plan in plans if plan.batched
                for spec in (*plan.specs, *(s for rule in plan.rules for s in rule.specs))]

    async def close(self) -> None:
        self._degraded_shown.set(False)  # closed, it decides nothing
        metrics.hide_batched_bounds(self)
        if self._batcher is not None:
            await self._batcher.close()
        if self._release is not None:
            await self._release()

    def plan_for(self, tenant_id: str, plan: str | None, known: bool) -> CompiledPlan | None:
        if known and (own := self.tenant_plans.get(tenant_id)) is not None:
            return own
        return self.plans.get(plan or self.config.default_plan or "")

    def check_local(self, plan: CompiledPlan, tenant_id: str, method: str, path: str,
                    cost: int = 1) -> Verdict | None:
        """The verdict when it needs no store round trip (no bucket applies, the over-limit
        cache denies, or a batched mirror decides); None when only the store can decide."""
        buckets = self._buckets_for(plan, tenant_id, method, path)
        if not buckets:
            return _NO_BUCKETS
        return self._local(buckets, cost, plan.batch_interval if plan.batched else None,
                           with_states=self.headers_on_allow)

    async def check_store(self, plan: CompiledPlan, tenant_id: str, method: str, path: str,
                          cost: int = 1) -> Verdict:
        """The store's verdict (or the failure mode's), for a request check_local left open."""
        return await self._from_store(self._buckets_for(plan, tenant_id, method, path), cost,
                                      plan.failure_mode,
                                      plan.batch_interval if plan.batched else None)

    async def check(self, plan: CompiledPlan, tenant_id: str, method: str, path: str,
                    cost: int = 1) -> Verdict:
        local = self.check_local(plan, tenant_id, method, path, cost)
        if local is not None:
            return local
        return await self.check_store(plan, tenant_id, method, path, cost)

    def _buckets_for(self, plan: CompiledPlan, tenant_id: str, method: str, path: str
                     ) -> tuple[Bucket, ...]:
        # Which buckets apply is a pure function of the plan, so it is remembered: bounded in
        # entries, only for short paths, and only for this Limiter's own plans, which live as
        # long as it does (a plan's id() names it only while it is alive).
        key = (id(plan), tenant_id, method, path) if plan.rules else (id(plan), tenant_id)
        held = self._held.get(key)
        if held is None:
            held = tuple(plan.buckets(tenant_id, method, path))
            if len(path) <= MAX_MEMO_PATH_CHARS and id(plan) in self._own_plans:
                remember(self._held, key, held, self._max_held)
        return held

    async def decide(self, buckets: Sequence[Bucket], cost: int, failure_mode: FailureMode,
                     batch_interval: float | None = None) -> Verdict:
        """All buckets admit `cost` and are charged, or none is; the failure mode on error.

        A store error under `open` or `closed` is neither counted nor logged here: the caller
        decides several groups per answer, and counts the answer once (`store_failed`).
        """
        held = tuple(buckets)
        local = self._local(held, cost, batch_interval)
        if local is not None:
            return local
        return await self._from_store(held, cost, failure_mode, batch_interval, counted=False)

    def _local(self, held: tuple[Bucket, ...], cost: int, batch_interval: float | None,
               with_states: bool = True) -> Verdict | None:
        """`with_states`: an admitting verdict must carry each bucket's state (for headers)."""
        if self._cache is not None and cost > 0 and (
                cached := self._cache.check(held, cost)) is not None:
            metrics.LOCAL_DENIALS.inc()
            return Verdict(False, held, Outcome(False, cached, monotonic_us()))
        if batch_interval is not None and self._batcher is not None and cost > 0:
            if not with_states and self._batcher.admit_local(held, cost):
                return _ADMITTED_LOCALLY
            local = self._batcher.decide_local(held, cost)
            if local is not None:
                if not local.admitted:
                    metrics.LOCAL_DENIALS.inc()
                return Verdict(local.admitted, held, local)
        return None

    async def _from_store(self, held: tuple[Bucket, ...], cost: int, failure_mode: FailureMode,
                          batch_interval: float | None, counted: bool = True) -> Verdict:
        try:
            outcome = await self.store.acquire(held, cost)
        except QuotaStoreUnavailable:
            return await self._failed(held, cost, failure_mode, counted)
        if self._store_was_down:
            self._store_was_down = False
            log.info("quota store %s available again", self.store.name)
        self._degraded_shown.set(False)
        if not outcome.admitted and self._cache is not None and cost > 0:
            self._cache.remember(held, outcome, cost)
        if batch_interval is not None and self._batcher is not None:
            self._batcher.learn(held, outcome, batch_interval)
        return Verdict(outcome.admitted, held, outcome)

    async def _failed(self, buckets: tuple[Bucket, ...], cost: int, mode: FailureMode,
                      counted: bool) -> Verdict:
        if mode == "degraded":
            self._warn(mode)
            self._degraded_shown.set(True)
            shares = tuple(degraded_bucket(b, self._replicas) for b in buckets)
            outcome = await self._degraded.acquire(shares, cost)
            return Verdict(outcome.admitted, shares, outcome)
        if counted:
            self.store_failed(mode)
        if mode == "open":
            # Fail open: availability over enforcement, by the operator's explicit choice.
            return Verdict(True, buckets)
        return Verdict(False, buckets, unavailable=True)

    def store_failed(self, mode: FailureMode, note: str = "") -> None:
        """One request the failed store let through (`open`) or refused with 503 (`closed`):
        counted, and a warning at most every STORE_DOWN_WARN_EVERY; `note` qualifies it."""
        self._warn(mode, note)
        if mode == "open":
            metrics.FAIL_OPEN.inc()
        elif mode == "closed":
            metrics.FAIL_CLOSED.inc()

    def _warn(self, mode: FailureMode, note: str = "") -> None:
        if self._store_down.ready():
            self._store_was_down = True
            effect = f"failing {mode}, {note}" if note else f"failing {mode}"
            log.warning("quota store %s unavailable (%s): %s", self.store.name, effect,
                        self.store.cause)


def tenant_plans(config: Config) -> dict[str, CompiledPlan]:
    """Registry tenants whose plan is their own: overrides merged over their plan."""
    q = config.quota
    out: dict[str, CompiledPlan] = {}
    issues: list[str] = []
    for tenant_id, entry in config.tenants.registry.items():
        plan_name = entry.plan or q.default_plan
        if entry.plan is not None and entry.plan not in q.plans:
            issues.append(f"tenants.registry.{tenant_id}.plan: unknown plan {entry.plan!r} "
                          f"(quota.plans has: {', '.join(sorted(q.plans)) or 'none'})")
            continue
        changes = entry.overrides.model_dump(exclude_none=True)
        if not changes:
            continue
        base = q.plans[plan_name] if plan_name else PlanConfig()
        try:  # validated as a whole plan: an override must pass every check a plan does
            merged = PlanConfig.model_validate(
                {**dict(base), **{k: getattr(entry.overrides, k) for k in changes}})
        except ValidationError as exc:
            at = ("tenants", "registry", tenant_id, "overrides")
            issues.extend(issue(err, at) for err in exc.errors())
            continue
        name = plan_name or tenant_id
        if "endpoints" in changes and (found := endpoint_named_like_plan(name, merged.endpoints)):
            issues.append(f"tenants.registry.{tenant_id}.overrides.endpoints[{found[0]}].name: "
                          f"{found[1]}")
            continue
        out[tenant_id] = compile_plan(name, merged, q.failure_mode)
    if issues:
        raise ConfigError(issues)
    return out
