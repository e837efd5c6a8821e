"""Alerts and dashboard: every query parses as PromQL and names metrics tenantgate exports."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import promql_parser
import pytest
import yaml
from deploy_support import CHART, REPO, Rendered
from promql_eval import Series, evaluate
from tenantgate.config.tls import LISTENERS
from tenantgate.decision import STATUS, Reason
from tenantgate.observe.metrics import OTHER_TENANT
from tenantgate.observe.quota import QuotaResult, RlsResult

DASHBOARD = REPO / "deploy" / "grafana" / "tenantgate-dashboard.json"
PLAIN_RULES = REPO / "deploy" / "prometheus" / "tenantgate-rules.yaml"

# The metric contract: name -> labels. Alerts and panels may use nothing else.
METRICS: dict[str, set[str]] = {
    "tenantgate_checks_total": {"decision", "reason", "tenant"},
    "tenantgate_check_duration_seconds_bucket": {"le"},
    "tenantgate_event_loop_lag_seconds_bucket": {"le"},
    "tenantgate_cross_tenant_attempts_total": {"tenant"},
    "tenantgate_jwks_fetches_total": {"issuer", "result"},
    "tenantgate_token_cache_total": {"result"},
    "tenantgate_internal_errors_total": set(),
    "tenantgate_audit_write_errors_total": set(),
    "tenantgate_audit_lines_dropped_total": {"class"},
    "tenantgate_quota_decisions_total": {"tenant", "result"},
    "tenantgate_quota_store_errors_total": {"store"},
    "tenantgate_quota_fail_open_total": set(),
    "tenantgate_quota_fail_closed_total": set(),
    "tenantgate_config_reloads_total": {"result"},
    "tenantgate_config_last_reload_successful": set(),
    "tenantgate_tls_reread_failures_total": {"listener"},
    "tenantgate_apikey_revocation_subscribed": {"channel"},
    "tenantgate_context_signing_key_info": {"key_id"},  # an Info: key_id is its value's key
    "tenantgate_quota_degraded_active": set(),
    "tenantgate_apikey_revoked_attempts_total": {"tenant"},
    "tenantgate_ratelimit_service_requests_total": {"domain", "result"},
}
# Read by alerts, not shown on the dashboard: state an alert says better than a panel.
NO_PANEL = {"tenantgate_context_signing_key_info"}
# Prometheus's own series, which alerts (not panels) may read too.
PROMETHEUS_SERIES: dict[str, set[str]] = {"up": {"namespace", "job", "instance"}}
# Values a query may compare a label with, per metric (what the code emits).
LABEL_VALUES: dict[tuple[str, str], set[str]] = {
    ("tenantgate_checks_total", "decision"): {"allow", "deny"},
    ("tenantgate_checks_total", "reason"): {str(r) for r in Reason},
    ("tenantgate_jwks_fetches_total", "result"): {"ok", "error", "not_modified"},
    ("tenantgate_token_cache_total", "result"): {"hit", "rejected_hit", "miss"},
    ("tenantgate_quota_decisions_total", "result"): {str(r) for r in QuotaResult},
    ("tenantgate_config_reloads_total", "result"): {"ok", "rejected"},
    ("tenantgate_tls_reread_failures_total", "listener"): set(LISTENERS.values()),
    ("tenantgate_ratelimit_service_requests_total", "result"): {str(r) for r in RlsResult},
}
ALERTS = {"TenantgateAuthFailureSpike", "TenantgateTenantThrottled",
          "TenantgateRateLimitDomainThrottled",
          "TenantgateCrossTenantAttempts", "TenantgateRevokedApiKeyInUse",
          "TenantgateJwksRefreshFailing", "TenantgateQuotaStoreErrors", "TenantgateQuotaFailOpen",
          "TenantgateQuotaDegraded", "TenantgateInternalErrors", "TenantgateCheckLatencyHigh",
          "TenantgateConfigReloadRejected", "TenantgateAuditWriteErrors", "TenantgateDown",
          "TenantgateEventLoopStalled", "TenantgateAuditLinesDropped",
          "TenantgateInstanceDown", "TenantgateDependencyUnavailable",
          "TenantgateRevocationChannelDown", "TenantgateTlsRereadFailing",
          "TenantgateSigningKeysMixed"}


def _selectors(expr: str) -> list[promql_parser.VectorSelector]:
    found: list[promql_parser.VectorSelector] = []

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)
        elif isinstance(node, promql_parser.MatrixSelector):
            visit(node.vector_selector)
        for attr in ("expr", "lhs", "rhs", "param"):
            child = getattr(node, attr, None)
            if child is not None and not isinstance(child, str | int | float):
                visit(child)
        for arg in getattr(node, "args", None) or []:
            visit(arg)

    visit(promql_parser.parse(expr))
    return found


# Prometheus' own target labels: the chart scopes a release's alerts with them.
SCOPE = {"namespace", "job"}


def _check_query(expr: str, known: dict[str, set[str]] = METRICS) -> None:
    selectors = _selectors(expr)
    assert selectors, f"no metric in {expr}"
    for selector in selectors:
        assert selector.name in known, f"unknown metric {selector.name} in {expr}"
        for matcher in selector.matchers.matchers:
            assert matcher.name in known[selector.name] | SCOPE, \
                f"{selector.name} has no label {matcher.name}"
            allowed = LABEL_VALUES.get((selector.name, matcher.name))
            if allowed is None or matcher.value == ".*":
                continue
            values = set(matcher.value.split("|")) if matcher.op in (
                promql_parser.MatchOp.Re, promql_parser.MatchOp.NotRe) else {matcher.value}
            assert values <= allowed, f"{selector.name}{{{matcher.name}}}: {values - allowed}"


@pytest.fixture(scope="module")
def rules(render: Callable[..., Rendered]) -> list[dict[str, Any]]:
    rule_doc = render("standalone-redis-full.yaml").one("PrometheusRule")
    return [rule for group in rule_doc["spec"]["groups"] for rule in group["rules"]]


def test_every_alert_the_issue_asks_for_is_there(rules: list[dict[str, Any]]) -> None:
    assert {r["alert"] for r in rules} == ALERTS


def test_every_alert_expression_is_valid_promql_over_known_metrics(
        rules: list[dict[str, Any]]) -> None:
    for rule in rules:
        _check_query(rule["expr"], {**METRICS, **PROMETHEUS_SERIES})
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}
        assert {"summary", "description"} <= set(rule["annotations"])


def test_per_tenant_alerts_keep_the_tenant_label(rules: list[dict[str, Any]]) -> None:
    by_name = {r["alert"]: r for r in rules}
    for name in ("TenantgateAuthFailureSpike", "TenantgateTenantThrottled",
                 "TenantgateCrossTenantAttempts", "TenantgateRevokedApiKeyInUse"):
        groupings, _ = _aggregations_and_matchings(promql_parser.parse(by_name[name]["expr"]))
        assert all(labels - SCOPE == {"tenant"} for labels in groupings), name
        assert "{{ $labels.tenant }}" in by_name[name]["annotations"]["summary"], name


def test_auth_failure_alert_counts_exactly_the_reasons_answered_401(
        rules: list[dict[str, Any]]) -> None:
    expr = next(r["expr"] for r in rules if r["alert"] == "TenantgateAuthFailureSpike")
    match = re.search(r'reason=~"([^"]+)"', expr)
    assert match is not None
    unauthorized = {str(reason) for reason, status in STATUS.items() if status == 401}
    assert set(match.group(1).split("|")) == unauthorized


def test_auth_failure_alert_says_credential_failures_count_under_other(
        rules: list[dict[str, Any]]) -> None:
    """A bad JWT or API key is refused before any tenant is known: its label is "other"."""
    rule = next(r for r in rules if r["alert"] == "TenantgateAuthFailureSpike")
    description = rule["annotations"]["description"]
    assert f'tenant="{OTHER_TENANT}"' in description
    assert str(Reason.ISSUER_NOT_ALLOWED_FOR_TENANT) in description
    assert "empty tenant" not in description
    readme = (REPO / "deploy" / "README.md").read_text()
    assert f'`tenant="{OTHER_TENANT}"`' in readme


def _aggregations_and_matchings(node: Any) -> tuple[list[set[str]], list[set[str]]]:
    """The grouping labels of every aggregation and of every binary operator's on(...)."""
    groupings: list[set[str]] = []
    matchings: list[set[str]] = []

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.AggregateExpr):
            groupings.append(set(node.modifier.labels) if node.modifier else set())
        if isinstance(node, promql_parser.BinaryExpr) and node.modifier is not None \
                and node.modifier.matching is not None:
            matchings.append(set(node.modifier.matching.labels))
        for attr in ("expr", "lhs", "rhs"):
            child = getattr(node, attr, None)
            if child is not None and not isinstance(child, str | int | float):
                visit(child)

    visit(node)
    return groupings, matchings


def test_jwks_alert_is_per_instance_so_one_replica_cut_off_from_the_idp_shows(
        rules: list[dict[str, Any]]) -> None:
    """Each replica fetches the JWKS on its own. Summed by issuer alone, one replica's errors
    were hidden (`unless`) by any other replica's successful fetch: a pod whose egress or DNS
    cannot reach the IdP rejected rotated keys while the alert stayed silent."""
    rule = next(r for r in rules if r["alert"] == "TenantgateJwksRefreshFailing")
    groupings, matchings = _aggregations_and_matchings(promql_parser.parse(rule["expr"]))
    assert [labels - SCOPE for labels in groupings] == [{"issuer", "instance"}] * 2
    assert [labels - SCOPE for labels in matchings] == [{"issuer", "instance"}]
    assert "{{ $labels.instance }}" in rule["annotations"]["summary"]


def test_the_latency_alert_can_fire_at_every_threshold_the_chart_accepts() -> None:
    """A quantile read from a histogram never exceeds its top finite bucket: with 1 s on top,
    a threshold of 1 s or more could never fire and the p99 panel flattened at 1 s."""
    from tenantgate.observe.metrics import CHECK_SECONDS

    [family] = CHECK_SECONDS.collect()
    top_bucket = max(float(sample.labels["le"]) for sample in family.samples
                     if sample.name.endswith("_bucket") and sample.labels["le"] != "+Inf")
    schema = json.loads((CHART / "values.schema.json").read_text())
    threshold = schema["properties"]["metrics"]["properties"]["prometheusRule"]["properties"][
        "checkLatencyP99Seconds"]
    assert threshold["exclusiveMaximum"] <= top_bucket
    assert top_bucket == 10.0


def _reads_should_rate_limit_429s(expr: str) -> bool:
    return any(
        selector.name == "tenantgate_ratelimit_service_requests_total" and any(
            m.name == "result" and m.value == str(RlsResult.OVER_LIMIT)
            for m in selector.matchers.matchers)
        for selector in _selectors(expr.replace("$__rate_interval", "1m")))


def test_429s_of_should_rate_limit_have_an_alert_and_a_panel(
        rules: list[dict[str, Any]]) -> None:
    """ShouldRateLimit counts its 429s per domain, apart from the Check quota's decisions:
    the throttling alert and the 429 panel read only the latter, so these went unseen."""
    alerting = [r["expr"] for r in rules if _reads_should_rate_limit_429s(r["expr"])]
    assert len(alerting) == 1
    groupings, _ = _aggregations_and_matchings(promql_parser.parse(alerting[0]))
    assert all(labels - SCOPE == {"domain"} for labels in groupings)
    panels = [p for p in json.loads(DASHBOARD.read_text())["panels"]
              if any(_reads_should_rate_limit_429s(t["expr"]) for t in p.get("targets", []))]
    assert [p["title"] for p in panels] == [
        "Rate limited (429) by rate-limit domain (ShouldRateLimit)"]


def test_values_name_exactly_the_alerts_that_wait_before_firing(
        rules: list[dict[str, Any]]) -> None:
    """values.yaml said every alert waits `for`; most fire at once."""
    values = (CHART / "values.yaml").read_text()
    start = values.index("    # Alert thresholds.")
    comment = values[start:values.index("\n    authFailureRatio", start)]
    waiting = {r["alert"] for r in rules if "for" in r}
    assert {name for name in ALERTS if name in comment} == waiting


def test_alert_thresholds_come_from_values(render: Callable[..., Rendered]) -> None:
    doc = render("standalone-redis-full.yaml",
                 sets={"metrics.prometheusRule.crossTenantMinCount": "42",
                       "metrics.prometheusRule.throttledFor": "30m"}).one("PrometheusRule")
    rules = {r["alert"]: r for g in doc["spec"]["groups"] for r in g["rules"]}
    assert rules["TenantgateCrossTenantAttempts"]["expr"].rstrip().endswith(">= 42")
    assert rules["TenantgateTenantThrottled"]["for"] == "30m"


@pytest.mark.parametrize("values", ["standalone-redis-full.yaml", "sidecar-memory.yaml"])
def test_a_release_whose_scrape_job_is_known_alerts_on_its_own_series_only(
        values: str, render: Callable[..., Rendered]) -> None:
    """Each sidecar application is a release of its own, all in one Prometheus: unscoped
    sum(...) rules fired every release's alerts on any one's series, with its thresholds."""
    doc = render(values, sets={"metrics.serviceMonitor.enabled": "true",
                               "metrics.prometheusRule.enabled": "true"}).one("PrometheusRule")
    scoped = [r for g in doc["spec"]["groups"] for r in g["rules"]]
    assert scoped
    for rule in scoped:
        jobs = set()
        for selector in _selectors(rule["expr"]):
            matchers = {m.name: m.value for m in selector.matchers.matchers}
            assert set(matchers) >= SCOPE, (rule["alert"], selector.name)
            jobs.add((matchers["namespace"], matchers["job"]))
        assert len(jobs) == 1, rule["alert"]
        groupings, matchings = _aggregations_and_matchings(promql_parser.parse(rule["expr"]))
        assert all(labels >= SCOPE for labels in groupings + matchings), rule["alert"]


def test_plain_prometheus_rules_file_matches_the_chart(render: Callable[..., Rendered]) -> None:
    """deploy/prometheus/ is for Prometheus without the Operator: the chart's rules, defaults."""
    chart_groups = render("standalone-minimal.yaml",
                          sets={"metrics.prometheusRule.enabled": "true"}).one(
                              "PrometheusRule")["spec"]
    assert yaml.safe_load(PLAIN_RULES.read_text()) == chart_groups, (
        "regenerate: helm template x deploy/helm/tenantgate --set metrics.prometheusRule."
        "enabled=true --show-only templates/prometheusrule.yaml | yq .spec")


def test_dashboard_queries_are_valid_promql_over_known_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    for panel in panels:
        for target in panel["targets"]:
            # Grafana's variables, as Grafana substitutes them before Prometheus sees the query.
            expr = target["expr"].replace("$__rate_interval", "1m").replace("$tenant", ".*")
            _check_query(expr)
            assert target["datasource"]["uid"] == "${datasource}"
    used = {s.name for p in panels for t in p["targets"] for s in _selectors(
        t["expr"].replace("$__rate_interval", "1m").replace("$tenant", ".*"))}
    assert used == set(METRICS) - NO_PANEL, \
        f"metrics without a panel: {sorted(set(METRICS) - NO_PANEL - used)}"


def test_dashboard_shows_what_the_issue_asks_for() -> None:
    titles = " | ".join(p["title"] for p in json.loads(DASHBOARD.read_text())["panels"])
    for wanted in ("by tenant", "Denials by reason", "429", "latency", "JWKS", "Quota store"):
        assert wanted in titles, wanted


def test_token_cache_hit_ratio_counts_only_tokens_that_needed_verifying() -> None:
    """A replayed bad token answered by the rejected-token cache is neither a hit nor a miss of
    the verified-token cache: counted in, a replay flood would read as a cold cache."""
    panel = next(p for p in json.loads(DASHBOARD.read_text())["panels"]
                 if p["title"] == "Token caches")
    ratio = next(t for t in panel["targets"] if t["legendFormat"] == "verified hit ratio")
    counted = []
    for selector in _selectors(ratio["expr"].replace("$__rate_interval", "1m")):
        (matcher,) = [m for m in selector.matchers.matchers if m.name == "result"]
        counted.append(set(matcher.value.split("|")))
    assert counted == [{"hit"}, {"hit", "miss"}]


def test_chart_ships_the_same_dashboard(render: Callable[..., Rendered]) -> None:
    configmap = render("standalone-redis-full.yaml").one("ConfigMap", "-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(configmap["data"]["tenantgate.json"]) == json.loads(DASHBOARD.read_text())
    assert (CHART / "files" / "grafana-dashboard.json").resolve() == DASHBOARD.resolve()


def test_the_metric_contract_matches_what_tenantgate_registers() -> None:
    import tenantgate.observe.apikeys
    import tenantgate.observe.loop_lag
    import tenantgate.observe.metrics
    import tenantgate.observe.quota  # noqa: F401 - they register their metrics on import
    from prometheus_client import REGISTRY, Info

    collectors = REGISTRY._names_to_collectors  # name (with _total, _bucket...) -> collector
    missing = [name for name in METRICS if name not in collectors]
    assert not missing, f"alerts or panels use metrics tenantgate does not define: {missing}"
    for name, labels in METRICS.items():
        defined = set(getattr(collectors[name], "_labelnames"))  # noqa: B009 - no public API
        if name.endswith("_bucket"):
            defined.add("le")
        if isinstance(collectors[name], Info):
            defined |= _info_labels(collectors[name])
        assert defined == labels, name


def _info_labels(info: Any) -> set[str]:
    """An info metric's labels are the keys its one writer gives it (signing_with)."""
    from tenantgate.observe import metrics

    assert info is metrics.CONTEXT_SIGNING_KEY
    before = dict(info._value)
    try:
        metrics.signing_with("contract")
        return {key for family in info.collect() for sample in family.samples
                for key in sample.labels}
    finally:
        with info._lock:
            info._value = before


def _plain_rules() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(PLAIN_RULES.read_text())["groups"] for r in g["rules"]]


OURS = {"namespace": "auth", "job": "tg-tenantgate"}  # the scrape job standalone-redis-full sets


def _fires(rule: dict[str, Any], *series: Series) -> set[frozenset[tuple[str, str]]]:
    return set(evaluate(rule["expr"], series))


def test_503s_from_a_dependency_down_alert_at_once_whichever_dependency(
        rules: list[dict[str, Any]]) -> None:
    """The API-key store down had no alert, the quota store failing closed only a 5-minute
    warning, and an issuer's keys past max_stale a warning after ~25 minutes, while clients
    were already refused: the alert reads the 503s themselves, every reason answered 503."""
    rule = next(r for r in rules if r["alert"] == "TenantgateDependencyUnavailable")
    match = re.search(r'reason=~"([^"]+)"', rule["expr"])
    assert match is not None
    assert set(match.group(1).split("|")) == {
        str(reason) for reason, status in STATUS.items() if status == 503}
    assert rule["labels"]["severity"] == "critical"
    assert rule["for"] == "2m"
    # A window as long as `for` or longer keeps one burst of 503s (a Redis restart, one
    # timeout) above 0 past `for`, and that paged: the window must be the shorter.
    assert "[1m]" in rule["expr"] and "[5m]" not in rule["expr"]
    groupings, _ = _aggregations_and_matchings(promql_parser.parse(rule["expr"]))
    assert [labels - SCOPE for labels in groupings] == [{"reason"}]
    assert "{{ $labels.reason }}" in rule["annotations"]["summary"]


def test_jwks_alert_no_longer_says_known_keys_keep_working(rules: list[dict[str, Any]]) -> None:
    """Known keys verify tokens only until jwks.max_stale; past it the issuer's tokens get 503."""
    rule = next(r for r in rules if r["alert"] == "TenantgateJwksRefreshFailing")
    description = rule["annotations"]["description"]
    assert "keep working" not in description
    assert "jwks.max_stale" in description and "503" in description
    assert "TenantgateDependencyUnavailable" in description


@pytest.mark.parametrize("plain", [False, True])
def test_a_rejected_reload_alerts_until_a_reload_succeeds(
        rules: list[dict[str, Any]], plain: bool) -> None:
    """increase(reloads{result="rejected"}[15m]) cleared itself after 15 minutes while the
    rejected file stayed on disk, and the next restart would fail on it."""
    rule = next(r for r in (_plain_rules() if plain else rules)
                if r["alert"] == "TenantgateConfigReloadRejected")
    labels = {**OURS, "instance": "10.0.0.1:9090"}
    assert _fires(rule, Series("tenantgate_config_last_reload_successful", labels, 0.0))
    assert not _fires(rule, Series("tenantgate_config_last_reload_successful", labels, 1.0))
    assert "{{ $labels.instance }}" in rule["annotations"]["summary"]


@pytest.mark.parametrize("plain", [False, True])
def test_a_replica_not_subscribed_to_revocations_alerts(
        rules: list[dict[str, Any]], plain: bool) -> None:
    rule = next(r for r in (_plain_rules() if plain else rules)
                if r["alert"] == "TenantgateRevocationChannelDown")
    channel = "tenantgate:apikeys:revoked"
    down = {**OURS, "instance": "10.0.0.2:9090", "channel": channel}
    up = {**down, "instance": "10.0.0.1:9090"}
    firing = _fires(rule, Series("tenantgate_apikey_revocation_subscribed", up, 1.0),
                    Series("tenantgate_apikey_revocation_subscribed", down, 0.0))
    assert firing == {frozenset(down.items())}
    assert rule["labels"]["severity"] == "warning" and rule["for"] == "5m"
    assert "api_keys.cache_ttl" in rule["annotations"]["description"]
    assert "&{{ $labels.channel }}" in rule["annotations"]["description"]


def test_tls_reread_failures_alert_per_instance_and_listener(
        rules: list[dict[str, Any]]) -> None:
    rule = next(r for r in rules if r["alert"] == "TenantgateTlsRereadFailing")
    groupings, _ = _aggregations_and_matchings(promql_parser.parse(rule["expr"]))
    assert [labels - SCOPE for labels in groupings] == [{"instance", "listener"}]
    assert "increase(tenantgate_tls_reread_failures_total" in rule["expr"]
    # Re-read once a minute: more than 2 failures in 10 minutes is a file that stays bad; one
    # caught half written by a tool writing the certificate and the key apart is not.
    assert rule["expr"].strip().endswith("[10m])) > 2")
    assert rule["labels"]["severity"] == "warning"
    assert "expire" in rule["annotations"]["description"]


@pytest.mark.parametrize("plain", [False, True])
def test_two_signing_keys_in_one_deployment_alert(
        rules: list[dict[str, Any]], plain: bool) -> None:
    """A signing-key rotation stuck half-way: replicas of one deployment sign with two keys."""
    rule = next(r for r in (_plain_rules() if plain else rules)
                if r["alert"] == "TenantgateSigningKeysMixed")

    def key(instance: str, key_id: str, job: dict[str, str] = OURS) -> Series:
        return Series("tenantgate_context_signing_key_info",
                      {**job, "instance": instance, "key_id": key_id}, 1.0)

    assert _fires(rule, key("10.0.0.1:9090", "k1"), key("10.0.0.2:9090", "k2"))
    assert not _fires(rule, key("10.0.0.1:9090", "k2"), key("10.0.0.2:9090", "k2"))
    if not plain:  # another release signs with its own key: not this release's rotation
        other = {"namespace": "shop", "job": "shop/tg-tenantgate-cart"}
        assert not _fires(rule, key("10.0.0.1:9090", "k1"), key("10.0.5.1:9090", "k9", other))
    assert rule["for"] == "30m"


def test_internal_errors_alert_says_background_tasks_count_too(
        rules: list[dict[str, Any]]) -> None:
    description = next(r for r in rules if r["alert"] == "TenantgateInternalErrors")[
        "annotations"]["description"]
    for task in ("JWKS refresh", "batched quota sync", "TLS certificate re-read", "reload"):
        assert task in description, task
