"""envoyproxy/ratelimit config files: every unit they define, and precise errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from tenantgate.errors import ConfigError
from tenantgate.quota.rls_config import UNIT_SECONDS, load_domains


@pytest.mark.parametrize("unit, seconds", [("second", 1), ("MINUTE", 60), ("hour", 3600),
                                           ("day", 86400), ("week", 604800),
                                           ("month", 2_592_000), ("YEAR", 31_536_000)])
def test_every_envoyproxy_ratelimit_unit_is_accepted(tmp_path: Path, unit: str,
                                                     seconds: int) -> None:
    path = tmp_path / "rl.yaml"
    path.write_text("domain: edge\ndescriptors:\n"
                    f"  - key: tenant\n    rate_limit: {{unit: {unit}, requests_per_unit: 5}}\n")
    limit = load_domains([str(path)])["edge"].any_value["tenant"].limit
    assert limit is not None and UNIT_SECONDS[limit.unit] == seconds


def test_an_unknown_unit_names_its_place(tmp_path: Path) -> None:
    path = tmp_path / "rl.yaml"
    path.write_text("domain: edge\ndescriptors:\n"
                    "  - key: tenant\n    rate_limit: {unit: fortnight, requests_per_unit: 5}\n")
    with pytest.raises(ConfigError) as error:
        load_domains([str(path)])
    assert "descriptors[0].rate_limit.unit: must be one of" in str(error.value)
