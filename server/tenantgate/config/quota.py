"""Quota configuration: rates, plans, endpoint rules, the store, failure modes and the RLS files."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from tenantgate.config.files import config_file_path
from tenantgate.config.paths import check_path_pattern
from tenantgate.config.redis_url import check_one_password, check_redis_url, check_text_password
from tenantgate.config.types import Count, Duration, Flag, Model, Secret, is_one_method

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([a-z]+)\s*$")
# In ms, divided once: 700 x 0.001 is 0.7000000000000001, and the period's label (the
# bucket's key and name, so response headers) would say so; 700 / 1000 is 0.7.
_PERIOD_MS = {
    "ms": 1, "s": 1000, "sec": 1000, "second": 1000, "m": 60_000, "min": 60_000,
    "minute": 60_000, "h": 3_600_000, "hour": 3_600_000, "d": 86_400_000, "day": 86_400_000,
}
# Plan and endpoint rule names become bucket names in response header values.
_NAME = r"^[A-Za-z0-9_.-]{1,64}$"
Name = Annotated[str, Field(pattern=_NAME)]
# Bounds that keep every bucket's arithmetic (whole µs, int64 in Redis, doubles in Lua)
# exact; nothing a plan means in practice comes near them.
MAX_COUNT = 2**32 - 1
MAX_PERIOD_SECONDS = 366 * 86400.0
MAX_REFILL_SECONDS = 10 * 365 * 86400.0
_RATE_HELP = "must be a rate such as 100/s, 6000/min, 1000000/day or 50/10s"

FailureMode = Literal["open", "closed", "degraded"]
Mode = Literal["exact", "batched"]


@dataclass(frozen=True, slots=True)
class Rate:
    """`count` requests per `period` seconds, as written (`100/s` is Rate(100, 1.0, '100/s'))."""

    count: int
    period: float
    text: str


def parse_rate(value: Any) -> Rate:
    if isinstance(value, Rate):
        return value
    if not isinstance(value, str) or not (m := _RATE.match(value.lower())):
        raise ValueError(_RATE_HELP)
    count, multiple, unit = int(m.group(1)), int(m.group(2) or 1), m.group(3)
    if unit not in _PERIOD_MS:
        raise ValueError(f"{_RATE_HELP} (unknown unit {unit!r})")
    if count < 1 or multiple < 1:
        raise ValueError("count and period must be at least 1")
    if count > MAX_COUNT:
        raise ValueError(f"count must be at most {MAX_COUNT} (Envoy's rate-limit API carries "
                         "a uint32)")
    period = multiple * _PERIOD_MS[unit] / 1000
    if period > MAX_PERIOD_SECONDS:
        raise ValueError("period must be at most 366 days")
    return Rate(count, period, value.strip())


RateValue = Annotated[Rate, BeforeValidator(parse_rate)]


def period_label(period: float) -> str:
    """A period as bucket keys and names carry it: `1` for 1 s, `0.5` for 500 ms, `2592000`
    for 30 days. Exact: `:g` kept six digits, so 30 days read `2.592e+06` and two periods
    alike in those digits shared one bucket."""
    text = repr(float(period))
    return text.removesuffix(".0")


def check_refill(burst: int, rate: Rate) -> None:
    if burst * rate.period / rate.count > MAX_REFILL_SECONDS:
        raise ValueError("burst would take more than 10 years to refill (burst x period / count)")


class LimitConfig(Model):
    """One bucket: a rate and the burst it holds (requests admitted at once from idle)."""

    rate: RateValue
    burst: Count | None = Field(default=None, ge=1, le=MAX_COUNT)  # default: the rate's count

    @model_validator(mode="after")
    def _refills_in_bounded_time(self) -> LimitConfig:
        check_refill(self.capacity, self.rate)
        return self

    @property
    def capacity(self) -> int:
        return self.burst if self.burst is not None else self.rate.count


def _limit(value: Any) -> Any:
    return {"rate": value} if isinstance(value, str) else value


Limit = Annotated[LimitConfig, BeforeValidator(_limit)]
"""A limit is written `100/s` or `{rate: 100/s, burst: 200}`."""


def _one_per_period(limits: list[LimitConfig]) -> list[LimitConfig]:
    # A bucket's key and name carry its period, not its position: two limits with one
    # period would share a bucket (and a header name), so only the first would count.
    seen: set[str] = set()
    for lim in limits:
        label = period_label(lim.rate.period)
        if label in seen:
            raise ValueError(f"two limits with a period of {label}s: give each period one "
                             "limit (its burst sets how many pass at once)")
        seen.add(label)
    return limits


def _one_method(value: str) -> str:
    if not is_one_method(value):  # as route rules refuse them
        raise ValueError(f"{value!r} is not one HTTP method (leave methods out for any method)")
    return value.upper()


Method = Annotated[str, AfterValidator(_one_method)]


def _endpoint_placeholder(segment: str) -> bool:
    # A `{name}` names something: `{}` is refused, unlike in paths.is_placeholder.
    return segment in ("*", "**") or re.fullmatch(r"\{[^{}/]+\}", segment) is not None


class EndpointRule(Model):
    """Method and path pattern -> buckets of their own, on top of the plan's limits."""

    name: Name
    methods: list[Method] | None = None  # None: every method; GET covers HEAD
    path: str = "/**"  # segments, `*` one segment, `**` the rest
    limits: list[Limit] = Field(min_length=1)

    _limits_differ = field_validator("limits")(_one_per_period)

    @field_validator("methods")
    @classmethod
    def _at_least_one(cls, value: list[str] | None) -> list[str] | None:
        if value == []:  # would match no request: the rule's limits would never apply
            raise ValueError("list at least one method (leave methods out for any method)")
        return value

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("paths start with /")
        if any("**" in seg and seg != "**" for seg in value.split("/")):
            raise ValueError("`**` must be a whole path segment")
        # `*.pdf` or `v{n}` would be matched literally: a rule that silently never applies. A
        # path Check refuses (`/a%EF%BC%8Fb`) would compile to a pattern counting another path.
        return check_path_pattern(value, whole=_endpoint_placeholder,
                                  named="`*`, `**` and `{name}`", rest_last=False,
                                  refused="and the rule would count other paths instead")


class PlanConfig(Model):
    """A plan: limits every request of a tenant counts against, endpoint rules, mode, failure."""

    limits: list[Limit] = Field(default_factory=list)
    # Burst of the shortest limit without its own (quota.limiter._specs applies it).
    burst: Count | None = Field(default=None, ge=1, le=MAX_COUNT)
    endpoints: list[EndpointRule] = Field(default_factory=list)
    mode: Mode = "exact"
    batch_interval: Duration = 0.05
    failure_mode: FailureMode | None = None  # None: quota.failure_mode

    _limits_differ = field_validator("limits")(_one_per_period)

    @model_validator(mode="after")
    def _sane(self) -> PlanConfig:
        names = [e.name for e in self.endpoints]
        if len(set(names)) != len(names):
            raise ValueError("endpoint rule names must be unique within a plan")
        if not 0.001 <= self.batch_interval <= 1.0:
            raise ValueError("batch_interval must be between 1ms and 1s")
        open_limits = [lim.rate for lim in self.limits if lim.burst is None]
        if self.burst is not None and open_limits:
            check_refill(self.burst, min(open_limits, key=lambda rate: rate.period))
        return self


def endpoint_named_like_plan(plan: str, endpoints: list[EndpointRule]) -> tuple[int, str] | None:
    """(index, message) of an endpoint rule named as its plan: their buckets would share names
    (`p-1s`), so response headers and the over-admission gauge could not tell them apart."""
    for index, rule in enumerate(endpoints):
        if rule.name == plan:
            return index, (f"{plan!r} is the plan's own name: its buckets would be named as the "
                           f"plan's ({plan}-<period>s) in headers and metrics; name it apart")
    return None


class PlanOverrides(Model):
    """Per-tenant overrides of plan values; a key left out keeps the plan's value."""

    limits: list[Limit] | None = None
    burst: Count | None = Field(default=None, ge=1, le=MAX_COUNT)
    endpoints: list[EndpointRule] | None = None
    mode: Mode | None = None
    batch_interval: Duration | None = None
    failure_mode: FailureMode | None = None


class CircuitConfig(Model):
    """After `failures` consecutive store errors, skip the store for `open_for`, then probe."""

    failures: Count = Field(default=5, ge=1)
    open_for: Duration = 2.0


class RedisConfig(Model):
    # redis://, rediss://, unix://, redis+sentinel://host:port[,host:port]/master, redis+cluster://
    url: str = "redis://127.0.0.1:6379/0"
    # Both above 0: a zero timeout fails every store call, so every request would fail closed.
    timeout: Duration = Field(default=0.1, gt=0)  # the whole round trip, queueing included
    connect_timeout: Duration = Field(default=0.2, gt=0)
    max_connections: Count = Field(default=64, ge=1)
    circuit: CircuitConfig = Field(default_factory=CircuitConfig)
    password: Secret | None = None  # {fromEnv: ...} / {fromFile: ...}: keeps it out of the URL

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        schemes = ("redis://", "rediss://", "unix://", "redis+sentinel://", "redis+cluster://",
                   "rediss+cluster://")
        if not value.startswith(schemes):
            raise ValueError(f"url must start with one of {', '.join(schemes)}")
        check_redis_url(value)  # hosts, ports, db, master: redis-py checks them only at serve
        if value.startswith(schemes[3:]) and urlsplit(value).query:
            # quota.redis.connect builds these clients from the hosts and path alone: a CA, a
            # database or a password given here would be silently dropped.
            raise ValueError("a redis+sentinel:// or redis(s)+cluster:// url takes no ?options "
                             "(they would be ignored): the database goes in the sentinel path "
                             "(/master/db), the password in the url or in quota.redis.password")
        return value

    @field_validator("password")
    @classmethod
    def _password_is_text(cls, value: Secret | None) -> Secret | None:
        return check_text_password(value)

    @model_validator(mode="after")
    def _one_password(self) -> RedisConfig:
        check_one_password(self.url, self.password, "url", "password")
        return self


class RateLimitServiceConfig(Model):
    """ShouldRateLimit: envoyproxy/ratelimit-format files (domain, descriptors, rate_limit)."""

    config_files: list[str] = Field(default_factory=list)
    tenant_key: str = "tenant"  # descriptor entry whose value hash-tags the keys

    @field_validator("config_files")
    @classmethod
    def _relative_to_config(cls, value: list[str], info: ValidationInfo) -> list[str]:
        return [config_file_path(f, info) for f in value]


class QuotaConfig(Model):
    enabled: Flag = False
    store: Literal["memory", "redis"] = "memory"
    redis: RedisConfig = Field(default_factory=RedisConfig)
    plans: dict[Name, PlanConfig] = Field(default_factory=dict)
    default_plan: str | None = None  # tenants without a plan (unknown-but-allowed, or unset)
    failure_mode: FailureMode = "closed"
    # The most tenantgate processes sharing the store (autoscaled: the maximum); degraded
    # mode gives each limit / replicas while the store fails.
    replicas: Count | None = Field(default=None, ge=1)
    response_headers_on_allow: Flag = False
    over_limit_cache: Flag = True
    max_local_entries: Count = Field(default=100_000, ge=100)
    ratelimit_service: RateLimitServiceConfig = Field(default_factory=RateLimitServiceConfig)

    @field_validator("plans")
    @classmethod
    def _endpoints_named_apart(cls, value: dict[str, PlanConfig]) -> dict[str, PlanConfig]:
        for name, plan in value.items():
            if found := endpoint_named_like_plan(name, plan.endpoints):
                raise ValidationError.from_exception_data("Config", [
                    {"type": "value_error", "loc": (name, "endpoints", found[0], "name"),
                     "input": None, "ctx": {"error": ValueError(found[1])}}])
        return value

    @field_validator("replicas")
    @classmethod
    def _one_process_counts_in_memory(cls, value: int | None,
                                      info: ValidationInfo) -> int | None:
        if (value is not None and value > 1 and info.data.get("store") == "memory"
                and info.data.get("enabled")):
            # Each process counts in its own memory: N of them admit N times every limit (and
            # with the quota off none counts: the chart checks only then too).
            raise ValueError(f"{value}, but store is memory (the default), which counts in "
                             f"each process apart: {value} processes would give every tenant "
                             f"{value} times its limits. Set store: redis (with redis.url) to "
                             "share quotas, or run one process (replicas: 1)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> QuotaConfig:
        if self.default_plan is not None and self.default_plan not in self.plans:
            raise ValueError(f"default_plan {self.default_plan!r} is not among plans "
                             f"({', '.join(sorted(self.plans)) or 'none defined'})")
        if self.store == "memory" and "redis" in self.model_fields_set:
            # Silently ignoring it would leave every replica enforcing the whole limit alone.
            raise ValueError("redis is set but store is memory (the default), so it would be "
                             "ignored: set store: redis to share quotas through Redis, or "
                             "remove redis")
        if not self.enabled and self.ratelimit_service.config_files:
            # ShouldRateLimit needs the quota's store: without it every call is answered OK.
            raise ValueError("ratelimit_service.config_files is set but enabled is false, so "
                             "ShouldRateLimit would answer OK to every call without reading "
                             "them: set enabled: true, or remove ratelimit_service")
        return self
