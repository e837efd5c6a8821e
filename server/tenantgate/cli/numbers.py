"""argparse types for numeric options: a bad value is a usage error (exit 2) naming the
option, never a traceback or a value that fails later (`nan`, `inf`, `-1`)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tenantgate.config.quota import Rate


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    # float() takes "nan" and "inf"; NaN fails every comparison, so test finiteness first.
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(
            f"must be a positive, finite number of seconds, got {text!r}")
    return value


def positive_whole_seconds(text: str) -> int:
    return _positive_whole(text, "a positive whole number of seconds")


def positive_whole_seconds_at_most(limit: int, in_words: str) -> Callable[[str], int]:
    """positive_whole_seconds up to `limit`, which `in_words` says for people ("10 years")."""
    def seconds(text: str) -> int:
        digits = text.lstrip("0") if text.isascii() and text.isdigit() else ""
        # The length first: int() refuses more than 4300 digits with a ValueError of its own.
        if len(digits) > len(str(limit)) or (digits and int(digits) > limit):
            raise argparse.ArgumentTypeError(
                f"must be at most {limit} seconds ({in_words}), got {text!r}")
        return positive_whole_seconds(text)
    return seconds


def positive_count(text: str) -> int:
    return _positive_whole(text, "a positive whole number")


def _positive_whole(text: str, what: str) -> int:
    # Digits only: int() would also take "-5", "+5" and " 5", and a fraction would truncate to 0.
    if not (text.isascii() and text.isdigit() and int(text) > 0):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
    return int(text)


def port(text: str) -> int:
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= 65535):
        raise argparse.ArgumentTypeError(f"must be a port from 1 to 65535, got {text!r}")
    return int(text)


def rate(text: str) -> Rate:
    """A rate as quota limits write it (`100/s`, `6000/min`, `50/10s`)."""
    from tenantgate.config.quota import parse_rate  # pydantic models: only when the option is used

    try:
        return parse_rate(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc}, got {text!r}") from None
