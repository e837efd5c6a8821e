"""HEAD and quota endpoint rules: a GET rule counts HEAD, unless a rule written for HEAD matches
the same request, which then governs it alone."""

from __future__ import annotations

import pytest
from tenantgate.config.load import parse_config
from tenantgate.quota.limiter import CompiledPlan, compile_plan

CONFIG = """
context:
  active_key: k1
  keys: [{id: k1, secret: {fromEnv: TG_QUOTA_HEAD_SECRET}}]
quota:
  plans:
    p:
      endpoints:
        - {name: files-get, methods: [GET], path: '/files/**', limits: ['10/min']}
        - {name: files-head, methods: [HEAD], path: '/files/**', limits: ['1000/min']}
        - {name: reports, methods: [GET], path: '/reports/**', limits: ['5/min']}
        - {name: export, methods: [GET], path: '/export', limits: ['10/min']}
        - {name: reads, methods: [GET, HEAD], path: '/**', limits: ['1000/min']}
"""


@pytest.fixture
def plan(monkeypatch: pytest.MonkeyPatch) -> CompiledPlan:
    monkeypatch.setenv("TG_QUOTA_HEAD_SECRET", "x" * 40)
    config = parse_config(CONFIG)
    return compile_plan("p", config.quota.plans["p"], "closed")


def test_a_rule_written_for_head_governs_it_alone_where_it_matches(plan: CompiledPlan) -> None:
    # Before: HEAD /files/a was charged to files-get (10/min) as well, capping its 1000/min.
    assert [b.name for b in plan.buckets("t", "HEAD", "/files/a")] == [
        "files-head-60s", "reads-60s"]


def test_where_no_head_rule_matches_the_get_rule_still_counts_head(plan: CompiledPlan) -> None:
    assert [b.name for b in plan.buckets("t", "HEAD", "/reports/x")] == [
        "reports-60s", "reads-60s"]
    assert [b.name for b in plan.buckets("t", "GET", "/files/a")] == ["files-get-60s", "reads-60s"]


def test_a_rule_for_get_and_head_alike_does_not_take_head_from_get_limits(
        plan: CompiledPlan) -> None:
    # A broad read rule listing GET and HEAD let HEAD /export skip the export limit.
    assert [b.name for b in plan.buckets("t", "HEAD", "/export")] == [
        "export-60s", "reads-60s"]
