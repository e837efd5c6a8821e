"""constraints.txt pins every distribution of the dev install, and this environment has them."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

CONSTRAINTS = Path(__file__).resolve().parents[2] / "constraints.txt"
_PIN = re.compile(r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+)")


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for number, line in enumerate(CONSTRAINTS.read_text().splitlines(), 1):
        if not line or line.startswith("#"):
            continue
        match = _PIN.fullmatch(line)
        assert match is not None, f"constraints.txt:{number}: not NAME==VERSION: {line!r}"
        name = canonicalize_name(match["name"])
        assert name not in pins, f"constraints.txt:{number}: {name} pinned twice"
        pins[name] = match["version"]
    return pins


def _installed_closure(root: str, extras: frozenset[str]) -> dict[str, str]:
    """Every distribution `root[extras]` needs here, transitively, with its installed version
    (markers evaluated for this interpreter and the extras asked for)."""
    seen: dict[str, str] = {}
    wanted: list[tuple[str, frozenset[str]]] = [(root, extras)]
    done: set[tuple[str, frozenset[str]]] = set()
    while wanted:
        name, asked = wanted.pop()
        if (name, asked) in done:
            continue
        done.add((name, asked))
        dist = metadata.distribution(name)
        seen[canonicalize_name(name)] = dist.version
        for text in dist.requires or ():
            requirement = Requirement(text)
            marker = requirement.marker
            if marker is None or any(marker.evaluate({"extra": e}) for e in asked | {""}):
                wanted.append((requirement.name, frozenset(requirement.extras)))
    return seen


def test_every_line_is_an_exact_pin() -> None:
    assert len(_pins()) > 10


def test_the_dev_install_is_pinned_and_installed_at_its_pins() -> None:
    # A dependency added to pyproject.toml without `python3 tools/dev.py lock` would install
    # at whatever version is newest that day; a venv not made by tools/dev.py differs here.
    pins = _pins()
    installed = _installed_closure("tenantgate", frozenset({"dev"}))
    del installed["tenantgate"]
    unpinned = sorted(set(installed) - set(pins))
    assert not unpinned, f"not in constraints.txt (run python3 tools/dev.py lock): {unpinned}"
    differ = {name: (version, pins[name]) for name, version in installed.items()
              if version != pins[name]}
    assert not differ, f"installed version, pinned version: {differ}"
