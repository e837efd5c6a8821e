"""What a path Check matches looks like: what Envoy's normalization leaves out of it, the form
route and endpoint literals are compared in, and the route and endpoint patterns that can match
such a path."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from urllib.parse import unquote

# What Envoy's normalization (docs/envoy.md) leaves out of a path, so what Check refuses with 400:
# empty or dot segments, backslashes, `;` path parameters (some backends drop `;...` from a
# segment, so `/admin;x` would dodge an `/admin` rule); encoded separators, dots or `;`; escaped
# letters, digits, `-`, `_` or `~`, which Envoy decodes (left escaped, `/%61dmin` would dodge
# an `/admin` rule on a backend that decodes it); escaped controls (a trailing `%0A` dodges an
# exact rule, and regex routers whose `$` matches before a final newline serve it anyway);
# and, for a proxy that lets them through, raw `#`, spaces, controls and non-ASCII characters.
# Then what a second decoder would read differently from Check: Envoy decodes one layer only,
# so `%252e%252e` (`%%32%65%%32%65` too, which Envoy turns into it) reaches Check and the
# backend as sent, and a backend that decodes twice serves `..`; a `%` without two hex digits
# (`%u002e` is `.` to IIS-style decoders); and escapes that are not UTF-8 (`%c0%ae` is an
# overlong `.` to lenient decoders). RFC 3986 allows any octet, but APIs speak UTF-8: fail
# closed. A literal `%` stays possible as `%25` before anything but two hex digits.
NOT_NORMALIZED = re.compile(
    # (?-i:...): case-insensitive, the range would also match `k` and `s` (U+212A and U+017F
    # fold to them).
    r"//|\\|;|#|(?-i:[\x00-\x20\x7f-\U0010ffff])|%(?:2f|5c|2e|3b|[01][0-9a-f]|7f)"
    r"|/\.\.?(?:/|$)"
    r"|%(?:2d|3[0-9]|[46][1-9a-f]|[57][0-9a]|5f|7e)"
    r"|%(?![0-9a-f]{2})|%25[0-9a-f]{2}"
    # An escaped byte of 0x80 or more that is not part of a UTF-8 sequence (RFC 3629, so no
    # overlong forms, surrogates or code points past U+10FFFF). Read from where a run of such
    # escapes begins, whole sequences taken possessively: the first high byte left over is
    # one no UTF-8 decoder accepts.
    r"|(?<!%[89a-f][0-9a-f])(?:%c[2-9a-f]{C}|%d[0-9a-f]{C}|%e0%[ab][0-9a-f]{C}"
    r"|%e[1-9a-cef]{C}{C}|%ed%[89][0-9a-f]{C}|%f0%[9ab][0-9a-f]{C}{C}|%f[1-3]{C}{C}{C}"
    r"|%f4%8[0-9a-f]{C}{C})*+%[89a-f][0-9a-f]".replace("{C}", "%[89ab][0-9a-f]"),
    re.IGNORECASE)


def fold(path: str) -> str:
    """The form literals are compared in: whatever the case, so a backend routing without
    regard to case cannot be reached around a rule. Escaped ASCII letters never get here
    (refused, or decoded by Envoy), so lower() covers every path without escapes; an escaped
    non-ASCII letter is decoded and folded (`/CAF%C3%89` is `/caf%C3%A9`), and NFKC makes the
    compatibility forms (fullwidth `a`, U+FF41) that backends normalizing Unicode serve as
    `a` compare as `a` too."""
    if "%" not in path:
        return path.lower()
    return "/".join(_fold_escaped(unquote(part)) if "%" in part else part.lower()
                    for part in path.split("/"))


def fold_request_path(path: str) -> str | None:
    """fold(path), or None when folding would make path syntax of an escaped character: NFKC
    turns U+FF0F (fullwidth solidus) into `/`, U+2025 into `..`, U+FF0E into `.`, others into
    `\\`, `?`, `#`, `;` or `%`. The folded path would then have other segments than the path
    as sent, which the `{tenant}` binding reads (`/tenants%EF%BC%8Fvictim%EF%BC%8Fnotes` folds
    to `/tenants/victim/notes`: one segment sent, three compared), and a backend that
    normalizes Unicode would see them too. Such a path is refused."""
    if "%" not in path:
        return path.lower()
    folded = []
    for part in path.split("/"):
        if "%" not in part:
            folded.append(part.lower())
            continue
        decoded = unquote(part)
        segment = _fold_escaped(decoded)
        # Compared with the decoded segment: `%25` and `%3F` are a `%` and a `?` as sent
        # (a file name may hold them), not something folding made.
        if segment in (".", "..") or _padded(segment) or any(
                segment.count(char) != decoded.count(char) for char in _PATH_SYNTAX):
            return None
        folded.append(segment)
    return "/".join(folded)


# Why fold_request_path refuses a path, for the config errors of rules that hold one.
REFUSED_ESCAPE = ("an escaped character here folds (NFKC) into path syntax (`/`, `.`, `..`, `\\`, "
                  "`?`, `#`, `;` or `%`), or is a space or invisible character ending a segment")


# What a segment must not gain by folding: separators, and what ends a path or begins a
# segment's parameters or an escape, which a backend normalizing Unicode would read as such.
_PATH_SYNTAX = "/\\?#;%"


def _padded(segment: str) -> bool:
    """An escaped space or invisible character at either end (`/admin%20`, `%C2%A0`, which
    NFKC makes a space, `%E2%80%8B`): a backend that trims segments serves `/admin`, which
    a rule for `/admin` would not see. (Raw spaces and controls are refused already.)"""
    return segment != segment.strip() or any(
        unicodedata.category(end) == "Cf" for end in (segment[:1], segment[-1:]) if end)


def _fold_escaped(decoded: str) -> str:
    return unicodedata.normalize("NFKC", decoded).casefold()


# Characters a path reaches Check with either as themselves or percent-encoded, as the client
# sent them: RFC 3986's pchar less the unreserved ones (Envoy decodes their escapes) and ";"
# (always refused), plus "[" and "]", which Envoy 1.40 also passes either way.
PATH_ESCAPABLE = ":@!$&'()*+,=[]"
# Characters Envoy only ever passes escaped (it escapes these, and refuses a raw space, control
# or non-ASCII character): a rule spelling one out would never match.
_ALWAYS_ESCAPED = ' "<>^`|'
# Never in a path Check matches: the query and fragment are not part of it, and paths with
# these are refused (NOT_NORMALIZED).
_NEVER_IN_PATH = "?#;\\"


def as_envoy_passes(path: str) -> str:
    """A route or endpoint pattern written as Envoy passes paths to Check, else ValueError.

    Escapable characters as themselves: Check refuses a path escaping a character that some
    rule spells out (policy.RouteTable), and a rule holding the escape would match neither
    form. Characters Envoy always escapes, escaped. Either way the rule would never apply."""
    for char in path:
        if char in _NEVER_IN_PATH:
            raise ValueError(f"{char!r} is never part of a path Check matches")
        if char in _ALWAYS_ESCAPED or not char.isascii() or not char.isprintable():
            escape = "".join(f"%{b:02X}" for b in char.encode("utf-8", "replace"))
            raise ValueError(f"write {char!r} as {escape}, as Envoy passes it to Check")
    folded = path.lower()
    for char in PATH_ESCAPABLE:
        escape = f"%{ord(char):02X}"
        if escape.lower() in folded:
            raise ValueError(f"write {char!r} as itself, not as {escape}")
    if found := NOT_NORMALIZED.search(path):
        fragment = found.group()
        if fragment == "%":
            raise ValueError(f"{path[found.start():found.start() + 3]!r}: a % needs two hex "
                             "digits (write a literal % as %25), or Check refuses the path")
        if len(fragment) == 5 and fragment[:3] == "%25":
            raise ValueError(f"{fragment!r}: a double-encoded escape (Check refuses it: a "
                             "backend decoding twice would read another path)")
        if fragment[-3:-2] == "%" and fragment[-2:-1].lower() in "89abcdef":
            raise ValueError(f"{fragment!r}: not UTF-8 (Check refuses escapes that are not), "
                             "so the rule would never apply")
        raise ValueError(f"{fragment!r}: Envoy normalizes paths before Check, and Check "
                         "refuses a path holding this, so the rule would never apply")
    return path


def is_placeholder(segment: str) -> bool:
    """`*`, `**` and `{name}` (a route's `{tenant}`, an endpoint's `{id}`): a placeholder stands
    for path segments and holds no literal characters to compare."""
    # One definition for policy and quota: the policy refuses escapes of the characters some
    # literal spells out, so the two must agree on what is not a literal.
    return segment in ("*", "**") or (segment.startswith("{") and segment.endswith("}"))


def check_path_pattern(pattern: str, *, whole: Callable[[str], bool], named: str,
                       rest_last: bool, refused: str) -> str:
    """A route's or endpoint's path pattern that can apply, else ValueError. Segments holding
    `*`, `{` or `}` must be placeholders (`whole`, called `named` in the message): a rule
    matched literally would silently never apply. With `rest_last`, `**` must end the pattern.
    The pattern must be written as Envoy passes paths (as_envoy_passes), with no escape that
    fold_request_path refuses (`refused` says what that would do to the rule)."""
    segments = pattern.strip("/").split("/")
    for i, segment in enumerate(segments):
        if rest_last and segment == "**" and i != len(segments) - 1:
            raise ValueError("** matches the rest of the path: it may only be the last segment")
        if not whole(segment) and re.search(r"[*{}]", segment):
            raise ValueError(f"segment {segment!r}: {named} stand for whole segments")
    as_envoy_passes(pattern)
    if fold_request_path(pattern) is None:
        raise ValueError(f"{REFUSED_ESCAPE}: Check refuses such a path, {refused}")
    return pattern
