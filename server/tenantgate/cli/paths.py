"""The argparse type for file options: an empty argument is a usage error (exit 2) naming
the option, not `Path("")`, which is `.` and was reported as "cannot write ." or
"Is a directory: '.'"."""

from __future__ import annotations

import argparse
from pathlib import Path


def non_empty_path(text: str) -> Path:
    if not text:
        raise argparse.ArgumentTypeError("must not be empty")
    return Path(text)
