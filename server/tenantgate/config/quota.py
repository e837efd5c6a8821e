"""Quota configuration: plans, endpoint rules, the store and its failure mode (issue 4 extends)."""

from __future__ import annotations

from pydantic import Field

from tenantgate.config.types import Model


class QuotaConfig(Model):
    enabled: bool = False
    plans: dict[str, dict[str, object]] = Field(default_factory=dict)
