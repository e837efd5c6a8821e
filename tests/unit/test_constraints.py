"""constraints.txt pins every distribution of the dev install, and this environment has them."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

CONSTRAINTS = Path(__file__).resolve().parents[2] / "constraints.txt"


def _pins() -> dict[str, list[Requirement]]:
    """Each name's pins: one, or several with markers that say which interpreter takes which."""
    pins: dict[str, list[Requirement]] = {}
    for number, line in enumerate(CONSTRAINTS.read_text().splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        pin = Requirement(text)
        [spec] = pin.specifier
        assert spec.operator == "==" and not pin.extras and not pin.url, \
            f"constraints.txt:{number}: not NAME==VERSION [; marker]: {line!r}"
        pins.setdefault(canonicalize_name(pin.name), []).append(pin)
    return pins


def _pinned_here(pins: list[Requirement]) -> list[str]:
    """The versions pinned for this interpreter (a marker evaluated here)."""
    return [next(iter(pin.specifier)).version for pin in pins
            if pin.marker is None or pin.marker.evaluate()]


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


def test_every_line_is_an_exact_pin_and_one_applies_here() -> None:
    pins = _pins()
    assert len(pins) > 10
    # Two pins of one name must not both apply to an interpreter: pip would refuse the pair.
    ambiguous = {name: found for name, entries in pins.items()
                 if len(found := _pinned_here(entries)) > 1}
    assert not ambiguous


def test_the_dev_install_is_pinned_and_installed_at_its_pins() -> None:
    # A dependency added to pyproject.toml without `python3 tools/dev.py lock` would install
    # at whatever version is newest that day; a venv not made by tools/dev.py differs here.
    pins = _pins()
    installed = _installed_closure("tenantgate", frozenset({"dev"}))
    del installed["tenantgate"]
    pinned = {name: _pinned_here(pins.get(name, [])) for name in installed}
    unpinned = sorted(name for name, versions in pinned.items() if not versions)
    assert not unpinned, f"not in constraints.txt (run python3 tools/dev.py lock): {unpinned}"
    differ = {name: (version, pinned[name]) for name, version in installed.items()
              if [version] != pinned[name]}
    assert not differ, f"installed version, pinned version: {differ}"
