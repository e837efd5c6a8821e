"""Endpoint patterns match as their old regex form did, in O(tokens x segments) on any path."""

from __future__ import annotations

import random
import re

import pytest
from tenantgate.config.paths import fold
from tenantgate.quota import limiter
from tenantgate.quota.limiter import compile_path

PATTERN_SEGMENTS = ["**", "*", "{id}", "a", "B", "ab", "%C3%A9"]
PATH_SEGMENTS = ["a", "A", "b", "AB", "x", "", "%C3%89", "%C3%A9", "*"]
SIXTY_KIB = 60 * 1024


def regex_form(pattern: str) -> re.Pattern[str]:
    """The reference: how patterns were compiled before, which backtracked without bound."""
    pieces = ["(?:/.*)?" if seg == "**"
              else "/[^/]+" if seg == "*" or seg.startswith("{")
              else "/" + re.escape(fold(seg))
              for seg in pattern.split("/") if seg]
    optional_slash = "" if pieces and pieces[-1] == "(?:/.*)?" else "/?"
    return re.compile("".join(pieces) + optional_slash)


def random_pattern(rng: random.Random) -> str:
    segments = rng.choices(PATTERN_SEGMENTS, k=rng.randint(0, 5))
    return "/" + "/".join(segments) + rng.choice(["", "", "/"])


def random_path(rng: random.Random, pattern: str) -> str:
    """Half the time an instance of the pattern (so that many match), else any path."""
    if rng.random() < 0.5:
        return "/" + "/".join(rng.choices(PATH_SEGMENTS, k=rng.randint(0, 6)))
    segments: list[str] = []
    for seg in filter(None, pattern.split("/")):
        if seg == "**":
            segments += rng.choices(PATH_SEGMENTS, k=rng.randint(0, 3))
        elif seg == "*" or seg.startswith("{"):
            segments.append(rng.choice([s for s in PATH_SEGMENTS if s]))
        else:
            segments.append(rng.choice([seg.lower(), seg.upper()]))
    return "/" + "/".join(segments) + rng.choice(["", "", "/"])


@pytest.mark.parametrize("seed", range(4))
def test_matches_as_the_regex_form_did(seed: int) -> None:
    rng = random.Random(seed)
    differing, hits, cases = [], 0, 0
    for _ in range(1500):
        pattern = random_pattern(rng)
        compiled, reference = compile_path(pattern), regex_form(pattern)
        for path in ["", "/", *(random_path(rng, pattern) for _ in range(8))]:
            expected = reference.fullmatch(fold(path)) is not None
            if compiled.matches(fold(path)) is not expected:
                differing.append((pattern, path, expected))
            hits, cases = hits + expected, cases + 1
    assert differing[:5] == []
    assert cases // 5 < hits < cases * 4 // 5  # both answers well represented


def repeated_path(tail: str) -> str:
    return "/api" + "/x/y" * (SIXTY_KIB // 4) + tail


@pytest.mark.parametrize(("pattern", "tail", "hit"), [
    ("/api/**/x/**/y/**/z", "/q", False),
    ("/api/**/x/**/y/**/z", "/z", True),
    ("/api/**/x/**/y/**/z", "/Z/", True),
    ("/api/**/x/**/y", "/q", False),
    ("/api/**/x/**/y", "/x/y", True),
])
def test_several_double_stars_decide_a_60_kib_path(pattern: str, tail: str, hit: bool) -> None:
    # The regex form took about a minute for 8 KB with three `**`, growing with the cube of the
    # length (hours for 60 KiB; seconds with two `**`), stalling the event loop and every Check.
    assert compile_path(pattern).matches(fold(repeated_path(tail))) is hit


def test_segment_comparisons_stay_within_tokens_times_segments(
        monkeypatch: pytest.MonkeyPatch) -> None:
    compared = 0
    fits_one = limiter._fits_one

    def counted(token: limiter.Token, segment: str) -> bool:
        nonlocal compared
        compared += 1
        return fits_one(token, segment)

    monkeypatch.setattr(limiter, "_fits_one", counted)
    pattern = compile_path("/api/**/x/**/y/**/z")
    path = repeated_path("/q")
    assert not pattern.matches(path)
    assert 0 < compared <= len(pattern.tokens) * path.count("/")
