"""`tenantgate check-config`: validate a config without serving."""

from __future__ import annotations

import argparse
import sys

from tenantgate.config.load import load_config
from tenantgate.errors import ConfigError
from tenantgate.quota import validate as validate_quota


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "check-config", help="validate a config file and exit",
        description="Validate a tenantgate config. Exit 0 when valid; otherwise print one line "
                    "per problem, each naming its key path, and exit 2.")
    parser.add_argument("file", metavar="FILE", help="tenantgate YAML config")
    parser.set_defaults(handler=_check)


def _check(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.file)
        validate_quota(config)
        if config.admin is not None and config.admin.tls is not None:
            from tenantgate.admin.server import read_tls

            read_tls(config.admin)  # what serve would refuse at start
    except ConfigError as exc:
        for issue in exc.issues:
            print(f"{args.file}: {issue}", file=sys.stderr)
        return 2
    print(f"{args.file}: ok ({len(config.issuers)} issuers, "
          f"{len(config.tenants.registry)} tenants, {len(config.policy.routes)} routes)")
    return 0
