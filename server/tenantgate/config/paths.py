"""What a path Check matches looks like: what Envoy's normalization leaves out of it, and the
form route and endpoint literals are compared in."""

from __future__ import annotations

import re
import unicodedata
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
