"""The `tenantgate` command: builds the sub-command tree; the only place that prints and exits."""

from __future__ import annotations

import argparse
import importlib
import sys

from tenantgate import __version__

# Each module exposes register(subparsers); its handlers return an exit code.
_COMMAND_MODULES = ("serve", "check_config", "token", "db", "keys", "envoy_config", "demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tenantgate",
        description="Tenant isolation for Envoy: ext_authz Check, rate limit, "
                    "signed tenant context.")
    parser.add_argument("--version", action="version", version=f"tenantgate {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(f"tenantgate.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"tenantgate.cli.{name}":
                raise
            continue  # a command whose module is not part of this build
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
