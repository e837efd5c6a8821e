"""How sub-commands report what they cannot use: a config (one line per issue, key path
first) or a command-line argument."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping

from tenantgate.context import utf8_encodable
from tenantgate.errors import ConfigError

EXIT_CONFIG = 2


def report_config_error(path: str, exc: ConfigError) -> int:
    print(f"tenantgate: invalid config {path}:", file=sys.stderr)
    for issue in exc.issues:
        print(f"  {issue}", file=sys.stderr)
    return EXIT_CONFIG


def non_utf8_option(args: argparse.Namespace,
                    names: Mapping[str, str] | None = None) -> str | None:
    """The first option whose text is not valid UTF-8 (named as in `names`, else --dest), or
    None. Python decodes such argv bytes to lone surrogates, which would fail later, deep
    inside protobuf or JSON encoding, as a traceback."""
    for dest, value in vars(args).items():
        for text in value if isinstance(value, list) else [value]:
            if isinstance(text, str) and not utf8_encodable(text):
                return (names or {}).get(dest, "--" + dest.replace("_", "-"))
    return None


