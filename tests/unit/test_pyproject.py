"""pyproject.toml asks for the build tools its own metadata needs."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

PYPROJECT = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())


def test_setuptools_bound_reads_an_spdx_license_string() -> None:
    # `license = "Apache-2.0"` (PEP 639) is an error to setuptools before 77: a build in an
    # environment holding 69-76, which the old bound allowed, failed.
    assert isinstance(PYPROJECT["project"]["license"], str)
    [requirement] = [r for r in PYPROJECT["build-system"]["requires"]
                     if r.startswith("setuptools")]
    match = re.fullmatch(r"setuptools>=(\d+)(?:\.\d+)*", requirement)
    assert match is not None, requirement
    assert int(match.group(1)) >= 77
