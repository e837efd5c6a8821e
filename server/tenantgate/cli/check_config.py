"""`tenantgate check-config`: validate a config without serving."""

from __future__ import annotations

import argparse
import errno
import os
import sys
from pathlib import Path

from tenantgate.config.load import load_config
from tenantgate.config.model import Config
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
        check_audit_path(config)
    except ConfigError as exc:
        for issue in exc.issues:
            print(f"{args.file}: {issue}", file=sys.stderr)
        return 2
    print(f"{args.file}: ok ({len(config.issuers)} issuers, "
          f"{len(config.tenants.registry)} tenants, {len(config.policy.routes)} routes)")
    return 0


def check_audit_path(config: Config) -> None:
    """Refuse what serve would fail to open (runtime._open_audit: append, created if missing)
    without opening it: opening would create the file, or wait for a reader on a FIFO. Checked
    as the user running check-config, which should be the one serve runs as."""
    audit = config.audit
    if not audit.enabled or audit.path == "-":
        return
    if (problem := _not_writable(Path(audit.path))) is not None:
        raise ConfigError([f"audit.path: cannot open {audit.path}: {os.strerror(problem)}"])


def _not_writable(path: Path) -> int | None:
    """The errno opening `path` for append (creating it if missing) would most likely fail
    with, or None."""
    if path.exists():
        if path.is_dir():
            return errno.EISDIR
        return None if os.access(path, os.W_OK) else errno.EACCES
    directory = path.parent
    if not directory.exists():
        return errno.ENOENT
    if not directory.is_dir():
        return errno.ENOTDIR
    return None if os.access(directory, os.W_OK | os.X_OK) else errno.EACCES
