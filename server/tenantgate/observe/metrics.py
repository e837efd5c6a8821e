"""Prometheus metrics of the Check path: closed label vocabularies, bounded tenant labels."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Info

from tenantgate.observe.plain import PlainCounter, PlainHistogram

OTHER_TENANT = "other"  # tenants outside the registry share one label, so cardinality is bounded

# The three counted on every Check are plain (observe/plain.py): no lock per increment.
CHECKS = PlainCounter("tenantgate_checks", "Check decisions", ["decision", "reason", "tenant"])
CHECK_SECONDS = PlainHistogram(
    "tenantgate_check_duration_seconds", "Time spent deciding one Check",
    # Up to 10 s: a quantile cannot read above the top finite bucket, so the latency alert's
    # threshold (values.schema.json: below 10) can be crossed.
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
             2.5, 5.0, 10.0))
CROSS_TENANT = Counter("tenantgate_cross_tenant_attempts",
                       "Requests for another tenant's path", ["tenant"])
JWKS_FETCHES = Counter("tenantgate_jwks_fetches", "JWKS fetches", ["issuer", "result"])
# result: hit (verified before), rejected_hit (refused before, for good), miss (verified now).
TOKEN_CACHE = PlainCounter("tenantgate_token_cache", "Bearer-token cache lookups", ["result"])
INTERNAL_ERRORS = Counter("tenantgate_internal_errors",
                          "Bugs: unexpected exceptions in a Check or a background task")
CONFIG_RELOADS = Counter("tenantgate_config_reloads", "Config reloads", ["result"])
# 1 from the start, 0 after a rejected reload (the running config is kept), 1 after an ok one:
# an alert on it holds while the config on disk is one the process refused.
CONFIG_LAST_RELOAD_OK = Gauge("tenantgate_config_last_reload_successful",
                              "1 unless the last reload was rejected")
# listener: grpc (listen.tls) or admin (admin.tls); the served certificate was kept.
TLS_REREAD_FAILURES = Counter("tenantgate_tls_reread_failures",
                              "Re-reads of a TLS listener's certificate files that failed",
                              ["listener"])
# class: anonymous (no verified identity), cross_tenant (cross_tenant_path denials),
# identified (other verified denials) or sampled_allow; each has audit.max_lines_per_second.
AUDIT_LINES_DROPPED = Counter("tenantgate_audit_lines_dropped",
                              "Audit lines over audit.max_lines_per_second, not written",
                              ["class"])
AUDIT_WRITE_ERRORS = Counter("tenantgate_audit_write_errors",
                             "Audit lines lost: the audit log could not be written, or its "
                             "reader (a pipe) stopped and the writer's queue was full")
# One series per process, labelled with context.active_key: during a signing-key rotation,
# the step that retires the old key waits until no replica shows it here any more.
CONTEXT_SIGNING_KEY = Info("tenantgate_context_signing_key",
                           "The key id this process signs tenant contexts with")
# Alerts use increase(): a series that first appears at 1 shows no increase, so the first event
# of a process would go unseen. Every series an alert watches exists at 0 from the start.
for _result in ("ok", "rejected"):
    CONFIG_RELOADS.labels(_result)
for _class in ("anonymous", "cross_tenant", "identified", "sampled_allow"):
    AUDIT_LINES_DROPPED.labels(_class)


def declare_tenants(labels: Iterable[str]) -> None:
    """Create the per-tenant series alerts watch (registry tenants plus "other") at 0."""
    for label in (*labels, OTHER_TENANT):
        CROSS_TENANT.labels(label)


def declare_jwks_issuer(issuer: str) -> None:
    """Create a configured issuer's fetch series at 0 (TenantgateJwksRefreshFailing)."""
    for result in ("ok", "not_modified", "error"):
        JWKS_FETCHES.labels(issuer, result)


def signing_with(key_id: str) -> None:
    """Say which key the Runtime now serving signs with (at start and after each reload)."""
    CONTEXT_SIGNING_KEY.info({"key_id": key_id})
