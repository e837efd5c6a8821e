"""The example config the docs point to stays valid."""

from __future__ import annotations

from pathlib import Path

import pytest
from tenantgate.config.load import load_config
from tenantgate.quota import validate as validate_quota

EXAMPLE = Path(__file__).parents[2] / "examples" / "tenantgate.yaml"


def test_the_complete_example_config_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENANTGATE_CONTEXT_KEY_2026_11", "n" * 40)
    monkeypatch.setenv("TENANTGATE_CONTEXT_KEY_2026_08", "a" * 40)
    config = load_config(EXAMPLE)
    validate_quota(config)
    assert [i.name for i in config.issuers] == ["platform", "initech-sso"]
    assert config.context.active_key == "2026-11" and len(config.context.keys) == 2
    assert config.tenants.registry["umbrella"].status == "suspended"
