"""The quota store failing is said as `<store> unavailable (<effect>): <reason>` (the reason the
store gave), and its answering again once per recovery, at INFO."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pytest
from tenantgate.config.load import parse_config
from tenantgate.errors import QuotaStoreUnavailable
from tenantgate.quota.limiter import CompiledPlan, Limiter
from tenantgate.quota.memory import MemoryStore
from tenantgate.quota.store import Bucket, Outcome

CONFIG = """
context:
  active_key: k1
  keys: [{id: k1, secret: {fromEnv: TG_QUOTA_TEST_SECRET}}]
quota:
  enabled: true
  store: redis  # the test passes its own store
  default_plan: free
  failure_mode: closed
  plans:
    free: {limits: ['100/s']}
"""


class Outage(MemoryStore):
    """Fails while `down`, keeping the reason as the Redis store does (`cause`)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self._cause = "none"

    @property  # type: ignore[misc]
    def cause(self) -> str:
        return self._cause

    async def acquire(self, buckets: Sequence[Bucket], cost: int = 1) -> Outcome:
        if self.down:
            self._cause = "ConnectionRefusedError: [Errno 111] Connection refused"
            raise QuotaStoreUnavailable(self._cause)
        return await super().acquire(buckets, cost)


def limiter_on_an_outage(monkeypatch: pytest.MonkeyPatch
                         ) -> tuple[Outage, Limiter, CompiledPlan]:
    monkeypatch.setenv("TG_QUOTA_TEST_SECRET", "x" * 40)
    store = Outage()
    limiter = Limiter(parse_config(CONFIG), store)
    plan = limiter.plan_for("acme", None, False)
    assert plan is not None
    return store, limiter, plan


async def test_the_store_failing_and_answering_again_are_each_said_once(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    store, limiter, plan = limiter_on_an_outage(monkeypatch)
    with caplog.at_level(logging.INFO, logger="tenantgate.quota"):
        for down in (False, True, True, False, False, True, False):
            store.down = down
            verdict = await limiter.check(plan, "acme", "GET", "/")
            assert verdict.unavailable == down
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "quota store memory unavailable (failing closed): ConnectionRefusedError: "
                    "[Errno 111] Connection refused"),
        ("INFO", "quota store memory available again"),
        # the second outage's warning falls within the first one's 10 s: unsaid, and so is its
        # end
    ]


async def test_a_store_failing_every_other_call_is_not_said_at_request_rate(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    # A demoted Redis answers denials and refuses admissions: every failed call used to arm
    # the INFO line, and the next answered one said it, one line per call.
    store, limiter, plan = limiter_on_an_outage(monkeypatch)
    with caplog.at_level(logging.INFO, logger="tenantgate.quota"):
        for down in (True, False) * 20:
            store.down = down
            await limiter.check(plan, "acme", "GET", "/")
    assert [r.levelname for r in caplog.records] == ["WARNING", "INFO"]
