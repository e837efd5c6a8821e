"""A Runtime that cannot be built (a rejected reload) leaves no audit file open behind it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tenantgate.errors import ConfigError
from tenantgate.runtime import Runtime
from tenantgate.testing.check import DevIssuer, build_config


def open_descriptors_of(path: Path) -> int:
    fds = Path("/proc/self/fd")
    return sum(1 for fd in fds.iterdir() if os.path.realpath(fd) == str(path.resolve()))


def test_a_failed_build_closes_the_audit_file(tmp_path: Path) -> None:
    config = build_config(tmp_path, [DevIssuer().config()],
                          tenants={"registry": {"acme": {"plan": "gold"}}},  # no such plan
                          quota={"enabled": True, "plans": {"free": {"limits": ["1/s"]}}})
    audit_file = Path(config.audit.path)
    with pytest.raises(ConfigError) as failed:
        Runtime.build(config)
    assert "unknown plan 'gold'" in str(failed.value.issues)
    assert audit_file.exists() and open_descriptors_of(audit_file) == 0
