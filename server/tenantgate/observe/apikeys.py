"""Prometheus metrics of API keys and their admin API: a closed result vocabulary, bounded
tenant labels."""

from __future__ import annotations

import enum

from prometheus_client import Counter


class KeyResult(enum.StrEnum):
    OK = "ok"
    INVALID = "invalid"  # unknown id, malformed, wrong prefix, wrong secret: one bucket
    REVOKED = "revoked"
    EXPIRED = "expired"
    UNAVAILABLE = "unavailable"  # the key store could not be read


APIKEY_CHECKS = Counter("tenantgate_apikey_checks", "API-key verifications",
                        ["tenant", "result"])
APIKEY_REVOKED_ATTEMPTS = Counter("tenantgate_apikey_revoked_attempts",
                                  "Requests presenting a revoked API key", ["tenant"])
ADMIN_AUTH_FAILURES = Counter("tenantgate_admin_auth_failures",
                              "Admin API calls refused for want of the admin token")
