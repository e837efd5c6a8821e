"""`tenantgate serve`: run the Check and rate-limit services."""

from __future__ import annotations

import argparse
import logging
import sys

from tenantgate.cli.errors import report_config_error
from tenantgate.cli.paths import non_empty_path
from tenantgate.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve", help="serve Check (ext_authz) and ShouldRateLimit over gRPC",
        description="Serve envoy.service.auth.v3.Authorization/Check and "
                    "envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit. SIGTERM "
                    "drains in-flight requests; SIGHUP reloads the config (an invalid one is "
                    "refused and the running config kept).")
    parser.add_argument("--config", required=True, type=non_empty_path, metavar="FILE",
                        help="tenantgate YAML config")
    parser.add_argument("--no-uvloop", action="store_true",
                        help="use the standard asyncio loop instead of uvloop")
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="default: INFO")
    parser.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    from tenantgate.app import StartupError, run

    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        run(str(args.config), use_uvloop=False if args.no_uvloop else None)
    except ConfigError as exc:
        return report_config_error(str(args.config), exc)
    except StartupError as exc:
        print(f"tenantgate: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0
