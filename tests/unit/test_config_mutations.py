"""The example config, broken at random: `check-config` answers every variant with exit 0, or
with exit 2 and one "file: key.path: message" line per problem; never a traceback."""

from __future__ import annotations

import copy
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tenantgate.cli import main

pytestmark = pytest.mark.unit

EXAMPLE = Path(__file__).parent.parent.parent / "examples" / "tenantgate.yaml"
# Values of every type and of the shapes the config parses (durations, rates, URLs, patterns).
ODD_VALUES: list[Any] = [
    None, True, False, 0, -1, 2**63, 1e308, float("nan"), "", "x", "ü\x00", "a" * 5000,
    "1s", "-1s", "999999999999h", "10/min", "0/min", "redis://", "unix://", "http://[::1",
    "^(", "*", "{tenant}", "/**", "//", "%2F", "1e400", "0x10", " 5 ",
    [], [None], [1, "a"], {}, {"x": 1}, {"": None},
]


def key_paths(node: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if at:
        yield at
    children = node.items() if isinstance(node, dict) else (
        enumerate(node) if isinstance(node, list) else ())
    for key, child in children:
        yield from key_paths(child, (*at, key))


def mutated(document: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """One to three changes: a value replaced, a key dropped, or an unknown key added."""
    document = copy.deepcopy(document)
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(list(key_paths(document)))
        parent = document
        for key in path[:-1]:
            parent = parent[key]
        roll = rng.random()
        if roll < 0.6 or not isinstance(parent, dict):
            parent[path[-1]] = rng.choice(ODD_VALUES)
        elif roll < 0.8:
            del parent[path[-1]]
        else:
            parent[rng.choice(["zzz", "x-y", "1"])] = rng.choice(ODD_VALUES)
    return document


@pytest.mark.parametrize("seed", range(4))
def test_a_broken_config_gets_key_path_messages_never_a_traceback(
        seed: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("TENANTGATE_CONTEXT_KEY_2026_11", "TENANTGATE_CONTEXT_KEY_2026_08"):
        monkeypatch.setenv(name, "k" * 64)
    example = yaml.safe_load(EXAMPLE.read_text())
    rng = random.Random(seed)
    config = tmp_path / "tenantgate.yaml"
    line = re.compile(re.escape(str(config)) + r": \S.*: \S")
    refused = 0
    for _ in range(40):
        config.write_text(yaml.safe_dump(mutated(example, rng)))
        code = main(["check-config", str(config)])  # an exception here fails the test
        out, err = capsys.readouterr()
        assert code in (0, 2), err
        assert "Traceback" not in out + err
        if code == 2:
            refused += 1
            lines = err.splitlines()
            assert lines and all(line.match(text) for text in lines), err
    assert refused  # the mutations do break configs: the messages above were checked
