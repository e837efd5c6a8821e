"""Operator-written regular expressions, matched in time linear in the text (RE2).

Tenant patterns run against tenant claims that arrive in tokens. Python's backtracking `re`
takes exponential time on a pattern such as `^(a+)+$` against `aaaa…!`, and a Check stuck in
it stalls the event loop for every tenant. RE2 bounds every match by the text's length and
refuses, at load time, what it cannot match that way (backreferences, lookaround)."""

from __future__ import annotations

from typing import Protocol

import re2


class Matcher(Protocol):
    def fullmatch(self, text: str) -> object | None: ...


_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # the config error says why; RE2 would also print it to stderr


def compile_linear(pattern: str) -> Matcher:
    """`pattern` compiled by RE2, or ValueError saying why RE2 refuses it."""
    try:
        matcher: Matcher = re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise ValueError(f"not a regular expression RE2 accepts: {reason} (tenant patterns "
                         "are RE2 syntax, matched in linear time: no backreferences, lookaround "
                         "or (?x); \\z, not \\Z; \\x{0430}, not \\u0430; repeats up to "
                         "{1000})") from None
    return matcher
