"""Endpoint patterns match as their old regex form did, in O(tokens x segments) on any path."""

from __future__ import annotations

import random
import re
from collections.abc import Callable

import pytest
from tenantgate.config.paths import fold
from tenantgate.quota import paths
from tenantgate.quota.paths import compile_path

# Literals holding regex syntax (the old form escaped them), escapes that fold (`%25` is `%`),
# `{name}` forms, and braces that are no wildcard: they must match as literals did.
PATTERN_SEGMENTS = ["**", "**", "*", "{id}", "{tenant_id}", "{X}", "a", "B", "ab", "%C3%A9",
                    "a.b", "a+", "(x", "$", "%25", "{a", "a}"]
PATH_SEGMENTS = ["a", "A", "b", "AB", "x", "", "%C3%89", "%C3%A9", "*", "a.b", "axb", "a+",
                 "aa", "(x", "$", "%25", "%", "{a", "a}", "{id}"]
SIXTY_KIB = 60 * 1024
SIXTEEN_KIB = 16 * 1024  # the longest path Check lets through


def regex_form(pattern: str) -> re.Pattern[str]:
    """The reference: how patterns were compiled before, which backtracked without bound."""
    pieces = ["(?:/.*)?" if seg == "**"
              else "/[^/]+" if seg == "*" or (seg.startswith("{") and seg.endswith("}"))
              else "/" + re.escape(fold(seg))
              for seg in pattern.split("/") if seg]
    optional_slash = "" if pieces and pieces[-1] == "(?:/.*)?" else "/?"
    return re.compile("".join(pieces) + optional_slash)


def random_pattern(rng: random.Random) -> str:
    segments = rng.choices(PATTERN_SEGMENTS, k=rng.randint(0, 5))
    return "/" + "/".join(segments) + rng.choice(["", "", "/"])


def random_path(rng: random.Random, pattern: str) -> str:
    """Half the time an instance of the pattern (so that many match), else any path; one in
    ten without its leading slash."""
    path = instance(rng, pattern) if rng.random() < 0.5 else "/" + "/".join(
        rng.choices(PATH_SEGMENTS, k=rng.randint(0, 6)))
    return path[1:] if rng.random() < 0.1 else path


def instance(rng: random.Random, pattern: str) -> str:
    segments: list[str] = []
    for seg in filter(None, pattern.split("/")):
        if seg == "**":
            segments += rng.choices(PATH_SEGMENTS, k=rng.randint(0, 3))
        elif seg == "*" or (seg.startswith("{") and seg.endswith("}")):
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


def count_segment_comparisons(monkeypatch: pytest.MonkeyPatch) -> Callable[[], int]:
    compared = 0
    fits_one = paths._fits_one

    def counted(token: paths.Token, segment: str) -> bool:
        nonlocal compared
        compared += 1
        return fits_one(token, segment)

    monkeypatch.setattr(paths, "_fits_one", counted)
    return lambda: compared


def test_segment_comparisons_stay_within_tokens_times_segments(
        monkeypatch: pytest.MonkeyPatch) -> None:
    compared = count_segment_comparisons(monkeypatch)
    pattern = compile_path("/api/**/x/**/y/**/z")
    path = repeated_path("/q")
    assert not pattern.matches(path)
    assert 0 < compared() <= len(pattern.tokens) * path.count("/")


@pytest.mark.parametrize("pattern", ["/tenants/{t}/**/export", "/**/a/a/a/a/a/a/a/a/b"])
@pytest.mark.parametrize("tail", ["", "/"])
def test_one_double_star_compares_few_segments_of_a_16_kib_path(
        monkeypatch: pytest.MonkeyPatch, pattern: str, tail: str) -> None:
    # Globbed over every segment (twice with a trailing slash), ten such rules cost 50 ms per
    # Check on a 16 KiB path, 30 times the regex form. The tokens before and after the only
    # `**` take one segment each, at the ends: one comparison each, whatever the length.
    compared = count_segment_comparisons(monkeypatch)
    compiled = compile_path(pattern)
    path = fold("/tenants/acme" + "/a" * ((SIXTEEN_KIB - 16) // 2) + tail)
    assert not compiled.matches(path)
    assert 0 < compared() <= len(compiled.tokens) < path.count("/")
