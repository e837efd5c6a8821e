"""The down alerts fire for a tenantgate that is down, however many other tenantgates are up.

A release whose every instance is down leaves Envoy answering its application 503, yet nothing
fired: absent() over the whole Prometheus stayed quiet while another release was scraped, and
the per-instance alert joined on jobs that still exported tenantgate's series, which a job
whose instances are all down no longer does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import promql_parser
import pytest
import yaml
from deploy_support import REPO, Rendered
from promql_eval import Labels, Series, evaluate

PLAIN_RULES = REPO / "deploy" / "prometheus" / "tenantgate-rules.yaml"
DOWN_ALERTS = ("TenantgateDown", "TenantgateInstanceDown")
# Where the test renders the chart (conftest: release tg, namespace auth), and the job each kind
# of rules watches. The plain file cannot know a job: it expects tenantgate in one of its own.
OURS = {"ServiceMonitor": "tg-tenantgate", "PodMonitor": "auth/tg-tenantgate-orders",
        "plain": "tenantgate"}
VALUES = {"ServiceMonitor": "standalone-redis-full.yaml", "PodMonitor": "sidecar-memory.yaml"}


def _exprs(groups: dict[str, Any]) -> dict[str, str]:
    return {r["alert"]: r["expr"] for g in groups["groups"] for r in g["rules"]
            if r["alert"] in DOWN_ALERTS}


@pytest.fixture(scope="module")
def rule_sets(render: Callable[..., Rendered]) -> dict[str, dict[str, str]]:
    sets = {kind: _exprs(render(values).one("PrometheusRule")["spec"])
            for kind, values in VALUES.items()}
    sets["plain"] = _exprs(yaml.safe_load(PLAIN_RULES.read_text()))
    return sets


def target(job: str, instance: str, *, up: bool, tenantgate: bool = True,
           namespace: str = "auth") -> list[Series]:
    """A scrape target: its `up`, and tenantgate's series if it is one (stale once down)."""
    labels = {"namespace": namespace, "job": job, "instance": instance}
    found = [Series("up", labels, float(up))]
    if tenantgate:
        found.append(Series("tenantgate_internal_errors_total", labels, 0.0, live=up))
    return found


def firing(rules: dict[str, str], *targets: list[Series]) -> dict[str, set[Labels]]:
    series = [s for t in targets for s in t]
    return {alert: set(found) for alert, expr in rules.items()
            if (found := evaluate(expr, series))}


def instances(labels: set[Labels]) -> set[str]:
    return {dict(one)["instance"] for one in labels}


ANOTHER_RELEASE = target("shop/tg-tenantgate-cart", "10.0.5.1:9090", up=True, namespace="shop")
UNRELATED_TARGET_DOWN = target("kubernetes-pods", "10.0.9.9:8080", up=False, tenantgate=False)


@pytest.mark.parametrize("kind", OURS)
@pytest.mark.parametrize("replicas", [1, 2])
def test_every_instance_of_a_release_down_fires_while_another_release_is_up(
        rule_sets: dict[str, dict[str, str]], kind: str, replicas: int) -> None:
    ours = [target(OURS[kind], f"10.0.0.{n}:9090", up=False) for n in range(1, replicas + 1)]
    fired = firing(rule_sets[kind], *ours, ANOTHER_RELEASE, UNRELATED_TARGET_DOWN)
    assert set(fired) == set(DOWN_ALERTS)
    assert instances(fired["TenantgateInstanceDown"]) == {
        f"10.0.0.{n}:9090" for n in range(1, replicas + 1)}


@pytest.mark.parametrize("kind", OURS)
def test_one_instance_down_fires_for_that_instance_alone(
        rule_sets: dict[str, dict[str, str]], kind: str) -> None:
    fired = firing(rule_sets[kind], target(OURS[kind], "10.0.0.1:9090", up=False),
                   target(OURS[kind], "10.0.0.2:9090", up=True), ANOTHER_RELEASE)
    assert set(fired) == {"TenantgateInstanceDown"}
    assert instances(fired["TenantgateInstanceDown"]) == {"10.0.0.1:9090"}


@pytest.mark.parametrize("kind", OURS)
def test_nothing_fires_while_every_tenantgate_is_up(
        rule_sets: dict[str, dict[str, str]], kind: str) -> None:
    assert firing(rule_sets[kind], target(OURS[kind], "10.0.0.1:9090", up=True),
                  ANOTHER_RELEASE, UNRELATED_TARGET_DOWN) == {}


def test_the_plain_rules_leave_out_a_shared_jobs_other_targets(
        rule_sets: dict[str, dict[str, str]]) -> None:
    """One annotation-based job often scrapes every pod: an application's own target that is
    down is not tenantgate's. (The chart's job holds tenantgate's metrics ports alone.)"""
    shared = "kubernetes-pods"
    assert firing(rule_sets["plain"], target(shared, "10.0.0.1:9090", up=True),
                  target(shared, "10.0.9.8:8080", up=False, tenantgate=False)) == {}


@pytest.mark.parametrize("kind", OURS)
def test_no_tenantgate_scraped_at_all_fires(
        rule_sets: dict[str, dict[str, str]], kind: str) -> None:
    assert "TenantgateDown" in firing(rule_sets[kind], UNRELATED_TARGET_DOWN)


@pytest.mark.parametrize("kind", VALUES)
def test_a_release_with_no_target_left_fires_while_another_release_is_up(
        rule_sets: dict[str, dict[str, str]], kind: str) -> None:
    """Pods deleted or never scheduled leave no target, so no `up` at all for the job."""
    assert set(firing(rule_sets[kind], ANOTHER_RELEASE)) == {"TenantgateDown"}


@pytest.mark.parametrize("kind", VALUES)
def test_the_chart_alerts_select_the_job_its_monitor_scrapes(
        render: Callable[..., Rendered], kind: str) -> None:
    """The Operator names the job after the Service (ServiceMonitor) or "<namespace>/<name>"
    (PodMonitor) when no jobLabel is set; the namespace label keeps two releases named alike in
    two namespaces apart."""
    rendered = render(VALUES[kind])
    monitor = rendered.one(kind)
    assert "jobLabel" not in monitor["spec"]
    if kind == "ServiceMonitor":
        wanted = monitor["spec"]["selector"]["matchLabels"]
        [service] = [d for d in rendered.docs if d["kind"] == "Service"
                     and "clusterIP" not in d["spec"]
                     and wanted.items() <= d["metadata"]["labels"].items()]
        job = service["metadata"]["name"]
    else:
        job = f"auth/{monitor['metadata']['name']}"
    assert job == OURS[kind]
    rules = _exprs(rendered.one("PrometheusRule")["spec"])
    for alert in DOWN_ALERTS:
        [selector] = _vector_selectors(promql_parser.parse(rules[alert]))
        assert selector.name == "up"
        assert {(m.name, m.value) for m in selector.matchers.matchers} == {
            ("namespace", "auth"), ("job", job)}, alert


def _vector_selectors(node: Any) -> list[Any]:
    if isinstance(node, promql_parser.VectorSelector):
        return [node]
    children = [getattr(node, attr, None) for attr in ("expr", "lhs", "rhs", "vector_selector")]
    children += getattr(node, "args", None) or []
    return [s for child in children if child is not None for s in _vector_selectors(child)]


def test_the_plain_rules_read_a_counter_every_tenantgate_exports_from_its_start(
        rule_sets: dict[str, dict[str, str]]) -> None:
    """Without a job to name, the plain rules know tenantgate by this series: it must be there
    from the first scrape, at 0, without labels of its own."""
    import tenantgate.observe.metrics  # noqa: F401 - registers the counter
    from prometheus_client import REGISTRY

    names = {s.name for alert in DOWN_ALERTS
             for s in _vector_selectors(promql_parser.parse(rule_sets["plain"][alert]))} - {"up"}
    assert names == {"tenantgate_internal_errors_total"}
    collector = REGISTRY._names_to_collectors["tenantgate_internal_errors_total"]
    assert getattr(collector, "_labelnames") == ()  # noqa: B009 - no public API
    assert REGISTRY.get_sample_value("tenantgate_internal_errors_total") is not None
