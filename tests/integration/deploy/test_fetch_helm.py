"""tools/fetch_helm.py: the pinned Helm binary, fetched once, verified every time."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from deploy_support import FETCH_HELM, REPO


def _fetch(dest: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(FETCH_HELM), "--dest", str(dest)],
                          capture_output=True, text=True, check=False, timeout=300)


def test_a_second_run_reuses_the_verified_binary(helm: str) -> None:
    dest = REPO / ".tools"
    binary = dest / "helm" / "helm"
    assert _fetch(dest).returncode == 0  # fetched now, or already there
    before = binary.stat().st_mtime_ns
    done = _fetch(dest)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()) == binary
    assert binary.stat().st_mtime_ns == before
    expected = next(line.split('"')[1] for line in FETCH_HELM.read_text().splitlines()
                    if line.startswith("HELM_SHA256"))
    assert hashlib.sha256(binary.read_bytes()).hexdigest() == expected


def test_a_tampered_binary_is_replaced(helm: str, tmp_path: Path) -> None:
    binary = tmp_path / "helm" / "helm"
    binary.parent.mkdir()
    assert _fetch(REPO / ".tools").returncode == 0
    binary.write_bytes((REPO / ".tools" / "helm" / "helm").read_bytes()[:-1] + b"\0")
    binary.chmod(0o755)
    done = _fetch(tmp_path)
    assert done.returncode == 0, done.stderr
    assert subprocess.run([str(binary), "version", "--short"], capture_output=True, text=True,
                          check=True).stdout.startswith("v3.17.")
