"""The argparse type for file options: an empty argument is a usage error (exit 2) naming
the option, not `Path("")`, which is `.` and was reported as "cannot write ." or
"Is a directory: '.'"."""

from __future__ import annotations

import argparse
from pathlib import Path


def non_empty_text(text: str) -> str:
    """As non_empty_path, for an option kept as text (a file name that is not UTF-8 is then
    named by the CLI's own non_utf8_option check)."""
    if not text:
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def non_empty_path(text: str) -> Path:
    return Path(non_empty_text(text))
