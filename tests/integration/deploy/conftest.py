"""Fixtures for the deployment tests: the real Helm binary and a chart renderer."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from deploy_support import CHART, Rendered, find_helm, run_helm, value_args
from tenantgate.testing.binaries import in_ci


@pytest.fixture(scope="session")
def helm() -> str:
    found, why = find_helm()
    if found is None:
        message = f"Helm 3.17 not available ({why}); run: python tools/fetch_helm.py"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return found


@pytest.fixture(scope="session")
def render(helm: str) -> Callable[..., Rendered]:
    def _render(*values: str, sets: dict[str, str] | None = None) -> Rendered:
        result = run_helm(helm, "template", "tg", str(CHART), "--namespace", "auth",
                          *value_args(list(values), sets))
        assert result.returncode == 0, result.stderr
        docs = [d for d in yaml.safe_load_all(result.stdout) if d]
        return Rendered(docs)
    return _render


@pytest.fixture(scope="session")
def render_error(helm: str) -> Callable[..., str]:
    """Render values expected to be refused; returns Helm's error text."""
    def _render_error(*values: str, sets: dict[str, str] | None = None) -> str:
        result = run_helm(helm, "template", "tg", str(CHART), *value_args(list(values), sets))
        assert result.returncode != 0, "the chart accepted values it should refuse"
        return result.stderr
    return _render_error


@pytest.fixture(scope="session")
def notes_chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the chart that renders NOTES.txt into a manifest: `helm template` skips NOTES
    and `helm install --dry-run` wants a cluster."""
    chart = tmp_path_factory.mktemp("notes") / "tenantgate"
    shutil.copytree(CHART, chart)
    (chart / "files" / "NOTES.txt").write_text((chart / "templates" / "NOTES.txt").read_text())
    (chart / "templates" / "zz-notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\n"
        'data: {notes: {{ tpl (.Files.Get "files/NOTES.txt") . | toJson }}}\n')
    return chart


@pytest.fixture(scope="session")
def render_notes(helm: str, notes_chart: Path) -> Callable[..., str]:
    """The NOTES text Helm prints after installing the chart with these values (release "tg",
    namespace "auth")."""
    def _render_notes(*values: str, sets: dict[str, str] | None = None) -> str:
        result = run_helm(helm, "template", "tg", str(notes_chart), "--namespace", "auth",
                          "--show-only", "templates/zz-notes.yaml",
                          *value_args(list(values), sets))
        assert result.returncode == 0, result.stderr
        return str(yaml.safe_load(result.stdout)["data"]["notes"])
    return _render_notes


@pytest.fixture
def key_dir(tmp_path: Path) -> Path:
    """A config directory laid out like the pod's /etc/tenantgate: config.yaml + keys/<id>."""
    keys = tmp_path / "keys"
    keys.mkdir()
    for key_id in ("k1", "k2"):
        (keys / key_id).write_text(f"{key_id}-" + "s" * 40)
    return tmp_path
