"""docs/metrics.md lists exactly the metrics tenantgate registers, under their exposed names."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import tenantgate
from prometheus_client import REGISTRY

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


def _registered() -> set[str]:
    for module in pkgutil.walk_packages(tenantgate.__path__, "tenantgate."):
        if not any(part in module.name for part in ("._gen", ".testing", "__main__")):
            importlib.import_module(module.name)  # metrics register when their module loads
    suffix = {"counter": "_total", "info": "_info"}  # what the exposition adds to the name
    return {family.name + suffix.get(family.type, "")
            for family in REGISTRY.collect() if family.name.startswith("tenantgate_")}


def test_every_metric_is_documented_and_every_documented_metric_exists() -> None:
    documented = set(re.findall(r"^\| `(tenantgate_[a-z_]+)` \|", DOC.read_text(), re.MULTILINE))
    assert len(documented) >= 20
    assert documented == _registered()
