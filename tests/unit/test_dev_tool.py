"""tools/dev.py, the README's two commands: a .venv left without pip is made again."""

from __future__ import annotations

import importlib.util
import subprocess
import venv
from pathlib import Path
from types import ModuleType

import pytest

DEV = Path(__file__).resolve().parents[2] / "tools" / "dev.py"


def _dev_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("tenantgate_dev_tool", DEV)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_venv_left_without_pip_is_made_again(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # An interrupted first run (or a Python without ensurepip) left bin/python and no pip:
    # every later run failed with "No module named pip" until someone deleted .venv.
    dev = _dev_module()
    target = tmp_path / ".venv"
    venv.EnvBuilder(with_pip=False).create(target)
    monkeypatch.setattr(dev, "VENV", target)
    monkeypatch.setattr(dev, "BIN", target / "bin")
    monkeypatch.setattr(dev, "STAMP", target / ".tenantgate-installed")
    installs: list[tuple[str, ...]] = []
    monkeypatch.setattr(dev, "run", lambda *args, env=None: installs.append(tuple(map(str, args))))
    dev.install()
    pip = subprocess.run([str(target / "bin" / "python"), "-m", "pip", "--version"],
                         capture_output=True, text=True)
    assert pip.returncode == 0, pip.stderr
    assert installs[-1][-1].endswith("[dev]")


def test_install_takes_the_pinned_versions_and_again_when_the_pins_change(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dev = _dev_module()
    target = tmp_path / ".venv"
    venv.EnvBuilder(with_pip=True).create(target)
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("pyyaml==6.0.2\n")
    monkeypatch.setattr(dev, "VENV", target)
    monkeypatch.setattr(dev, "BIN", target / "bin")
    monkeypatch.setattr(dev, "STAMP", target / ".tenantgate-installed")
    monkeypatch.setattr(dev, "CONSTRAINTS", constraints)
    installs: list[tuple[str, ...]] = []
    monkeypatch.setattr(dev, "run", lambda *args, env=None: installs.append(tuple(map(str, args))))
    dev.install()
    project = installs[-1]
    assert project[project.index("--constraint") + 1] == str(constraints)
    count = len(installs)
    dev.install()
    assert len(installs) == count, "nothing changed: no second install"
    constraints.write_text("pyyaml==6.0.3\n")
    dev.install()
    assert len(installs) > count, "new pins: installed again"
