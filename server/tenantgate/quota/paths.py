"""Endpoint path patterns (`/api/*/items/**`) as segment tokens, and matching paths to them."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from tenantgate.config.paths import fold, is_placeholder


class Wildcard(enum.Enum):
    SEGMENT = "*"  # `*` or `{name}`: one non-empty segment
    SEGMENTS = "**"  # any number of whole segments, none included


Token = str | Wildcard  # a str is a literal segment, folded


@dataclass(frozen=True, slots=True)
class PathPattern:
    """An endpoint pattern as segment tokens. Not a regex: `(?:/.*)?` per `**` backtracked in
    polynomial time of a degree growing with each `**`, on a path the caller picks (a minute
    for 8 KB with three), stalling the event loop. This is O(tokens x segments), O(tokens) after
    the split with one `**`, and matches as the regex did on every path Check lets through (its
    `**` did not span a newline)."""

    tokens: tuple[Token, ...]

    def matches(self, folded_path: str) -> bool:
        if not folded_path.startswith("/"):
            return folded_path == "" and _fits(self.tokens, [])  # Check refuses such paths
        segments = folded_path[1:].split("/")
        # One trailing slash is allowed (`/a` matches `/a/`). Dropped in every case: a final
        # `**` would take it, or may take nothing; no other token matches an empty segment.
        if segments[-1] == "":
            segments.pop()
        return _fits(self.tokens, segments)


def compile_path(pattern: str) -> PathPattern:
    """`/api/*/items/**`: `*` (or `{name}`) is one segment, `**` the rest (possibly empty);
    literal segments match whatever their case."""
    # Literals are compared with fold(path)'s segments, like policy routes: changing case (of
    # an escaped non-ASCII letter too) must not dodge an endpoint's limit.
    return PathPattern(tuple(_token(seg) for seg in pattern.split("/") if seg))


def _token(segment: str) -> Token:
    if segment == "**":
        return Wildcard.SEGMENTS
    if is_placeholder(segment):  # `*` or `{name}`, `**` being taken above
        return Wildcard.SEGMENT
    return fold(segment)


def _fits(tokens: Sequence[Token], segments: Sequence[str]) -> bool:
    # The tokens before the first `**` and after the last take one segment each: compared in
    # place, so that only the tokens between (if any but `**`) are globbed over the segments
    # between. Globbing `/**/x` over 8,000 segments took milliseconds; this takes one compare.
    if Wildcard.SEGMENTS not in tokens:
        return len(tokens) == len(segments) and all(map(_fits_one, tokens, segments))
    first = tokens.index(Wildcard.SEGMENTS)
    last = len(tokens) - tokens[::-1].index(Wildcard.SEGMENTS)  # just after the last `**`
    end = len(segments) - (len(tokens) - last)  # where the segments the tail takes begin
    if end < first or not (all(map(_fits_one, tokens[:first], segments))
                           and all(map(_fits_one, tokens[last:], segments[end:]))):
        return False
    middle = tokens[first:last]
    return (all(token is Wildcard.SEGMENTS for token in middle)
            or _glob(middle, segments[first:end]))


def _glob(tokens: Sequence[Token], segments: Sequence[str]) -> bool:
    """Glob matching that backtracks only to the latest `**`. Letting an earlier `**` take more
    never helps: every other token is one segment, so the latest `**` can take the same."""
    t = s = 0
    star, taken_to = -1, 0  # the latest `**` and where the segments it takes end
    while s < len(segments):
        token = tokens[t] if t < len(tokens) else None
        if token is Wildcard.SEGMENTS:
            star, taken_to, t = t, s, t + 1
        elif token is not None and _fits_one(token, segments[s]):
            t, s = t + 1, s + 1
        elif star >= 0:  # the latest `**` takes one segment more, and the rest is retried
            taken_to += 1
            t, s = star + 1, taken_to
        else:
            return False
    return all(token is Wildcard.SEGMENTS for token in tokens[t:])


def _fits_one(token: Token, segment: str) -> bool:
    return segment != "" if token is Wildcard.SEGMENT else token == segment
