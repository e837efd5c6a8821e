"""How sub-commands report a config they cannot use: one line per issue, key path first."""

from __future__ import annotations

import sys

from tenantgate.errors import ConfigError

EXIT_CONFIG = 2


def report_config_error(path: str, exc: ConfigError) -> int:
    print(f"tenantgate: invalid config {path}:", file=sys.stderr)
    for issue in exc.issues:
        print(f"  {issue}", file=sys.stderr)
    return EXIT_CONFIG
