"""tenantgate_quota_degraded_active follows the live limiters, across reloads."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from tenantgate.config.load import parse_config
from tenantgate.config.model import Config
from tenantgate.errors import QuotaStoreUnavailable
from tenantgate.observe import quota as metrics
from tenantgate.quota.limiter import Limiter
from tenantgate.quota.memory import MemoryStore
from tenantgate.quota.store import Bucket, Outcome

CONFIG = """
context:
  active_key: k1
  keys: [{id: k1, secret: {fromEnv: TG_QUOTA_TEST_SECRET}}]
quota:
  enabled: true
  store: redis  # each test passes its own store; degraded needs one that can fail
  default_plan: free
  failure_mode: degraded
  replicas: 2
  plans:
    free: {limits: ['10/s']}
"""


class Outage(MemoryStore):
    """A store that fails while `down`, as the Redis store reports it (`failing`)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = True

    @property  # type: ignore[misc]
    def failing(self) -> bool:
        return self.down

    async def acquire(self, buckets: Sequence[Bucket], cost: int = 1) -> Outcome:
        if self.down:
            raise QuotaStoreUnavailable("ConnectionError")
        return await super().acquire(buckets, cost)


@pytest.fixture
def config(monkeypatch: pytest.MonkeyPatch) -> Config:
    monkeypatch.setenv("TG_QUOTA_TEST_SECRET", "x" * 40)
    return parse_config(CONFIG)


def gauge() -> float:
    return float(metrics.DEGRADED_ACTIVE._value.get())


async def check(limiter: Limiter) -> None:
    plan = limiter.plan_for("acme", None, False)
    assert plan is not None
    await limiter.check(plan, "acme", "GET", "/")


async def test_the_gauge_clears_when_the_last_degraded_limiter_closes(config: Config) -> None:
    # A reload that turns the quota off leaves no limiter to report "not degraded": the
    # gauge stayed 1 for the life of the process.
    assert gauge() == 0
    limiter = Limiter(config, Outage())
    await limiter.start()
    await check(limiter)
    assert gauge() == 1
    await limiter.close()
    assert gauge() == 0


async def test_a_reload_while_the_store_is_down_keeps_the_gauge_up(config: Config) -> None:
    # Every reload's start() set the gauge to 0 although the store was still down: the
    # alert's `for:` started again at each reload.
    store = Outage()
    old = Limiter(config, store)
    await old.start()
    await check(old)
    new = Limiter(config, store)
    await new.start()
    assert gauge() == 1
    await old.close()  # the reload retires the old runtime
    assert gauge() == 1
    store.down = False
    await check(new)
    assert gauge() == 0
    await new.close()


async def test_a_limiter_started_on_a_healthy_store_is_not_degraded(config: Config) -> None:
    store = Outage()
    store.down = False
    limiter = Limiter(config, store)
    await limiter.start()
    assert gauge() == 0
    await limiter.close()
