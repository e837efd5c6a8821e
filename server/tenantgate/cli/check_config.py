"""`tenantgate check-config`: validate a config without serving."""

from __future__ import annotations

import argparse
import errno
import os
import stat
import sys

from tenantgate.cli.paths import non_empty_path
from tenantgate.config.addresses import socket_directory_missing, socket_path_problem
from tenantgate.config.load import load_config
from tenantgate.config.model import Config
from tenantgate.config.tls import read_tls
from tenantgate.errors import ConfigError
from tenantgate.quota import validate as validate_quota


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "check-config", help="validate a config file and exit",
        description="Validate a tenantgate config. Exit 0 when valid (printing any warnings, each "
                    "naming its key path); otherwise print one line per problem, each naming its "
                    "key path, and exit 2.")
    parser.add_argument("file", metavar="FILE", type=non_empty_path,
                        help="tenantgate YAML config")
    parser.set_defaults(handler=_check)


def _check(args: argparse.Namespace) -> int:
    warnings: list[str] = []
    try:
        config = load_config(args.file, strict=True, warn=warnings.append)
        validate_quota(config)
        check_tls(config)
        check_audit_path(config)
        if (warning := check_uds_path(config)) is not None:
            warnings.append(warning)
    except ConfigError as exc:
        for issue in exc.issues:
            print(f"{args.file}: {issue}", file=sys.stderr)
        return 2
    for warning in warnings:
        print(f"{args.file}: warning: {warning}", file=sys.stderr)
    print(f"{args.file}: ok ({len(config.issuers)} issuers, "
          f"{len(config.tenants.registry)} tenants, {len(config.policy.routes)} routes)")
    return 0


def check_tls(config: Config) -> None:
    """Refuse TLS files serve would refuse at start, with serve's message."""
    admin_tls = config.admin.tls if config.admin is not None else None
    for at, tls in (("listen.tls", config.listen.tls), ("admin.tls", admin_tls)):
        if tls is not None:
            read_tls(tls, at)


def check_audit_path(config: Config) -> None:
    """Refuse what serve would fail to open, with serve's message (runtime._open_audit)."""
    audit = config.audit
    if not audit.enabled or audit.path == "-":
        return
    if (problem := open_problem(audit.path)) is not None:
        raise ConfigError([f"audit.path: cannot open {audit.path}: {os.strerror(problem)}"])


def check_uds_path(config: Config) -> str | None:
    """Refuse a listen.uds serve could not bind, with serve's message (app._bind). A missing
    directory is only returned, a warning: a rendered config is checked before rollout, away
    from the volume that holds the socket (the chart's sidecars use /run/tenantgate)."""
    uds = config.listen.uds
    if not uds or (problem := socket_path_problem(uds)) is None:
        return None
    message = f"listen.uds: cannot listen on {uds}: {problem}"
    if socket_directory_missing(uds):
        return f"{message}; serve needs the directory where it runs"
    raise ConfigError([message])


# Linux's limit on the symbolic links one lookup follows.
_MAX_SYMLINKS = 40


def open_problem(path: str, links: int = 0) -> int | None:
    """The errno serve's open of `path` (observe.sink.open_sink: O_WRONLY | O_APPEND |
    O_CREAT) would fail with on Linux, or None; found as the user running check-config, which
    should be the one serve runs as. It creates nothing and does not open a FIFO (serve would
    wait for a reader; our close could end a reader's read), so a missing file is followed
    through the path as the kernel does: the directory it would be created in must resolve,
    and a dangling symbolic link is followed to what it names."""
    name = path.rstrip("/")
    if not name:
        return errno.EISDIR  # "/"
    directory, last = os.path.split(name)
    directory = directory or "."
    if (problem := _directory_problem(directory)) is not None:
        return problem
    if name != path or last in (".", ".."):
        return errno.EISDIR  # O_CREAT with a trailing slash: refused whatever is there
    try:
        mode = os.lstat(name).st_mode
    except FileNotFoundError:
        return _create_problem(directory)
    except OSError as exc:
        return exc.errno  # a last component too long
    if stat.S_ISLNK(mode):
        return _follow(directory, name, links)
    return _existing_problem(name, mode)


def _directory_problem(directory: str) -> int | None:
    try:
        return None if stat.S_ISDIR(os.stat(directory).st_mode) else errno.ENOTDIR
    except OSError as exc:  # missing, a name too long, a loop, not searchable
        return exc.errno


def _follow(directory: str, link: str, links: int) -> int | None:
    if links >= _MAX_SYMLINKS:
        return errno.ELOOP
    try:
        # What the kernel reaches through the link, /proc's fd links included (their text,
        # `pipe:[N]`, names no path): only a dangling link is followed by hand, below.
        return _existing_problem(link, os.stat(link).st_mode)
    except FileNotFoundError:
        pass
    except OSError as exc:  # a loop, a name too long
        return exc.errno
    try:
        target = os.readlink(link)
    except OSError as exc:  # gone since
        return exc.errno
    return open_problem(os.path.join(directory, target), links + 1)


def _create_problem(directory: str) -> int | None:
    try:
        if os.statvfs(directory).f_flag & os.ST_RDONLY:
            return errno.EROFS
    except OSError as exc:
        return exc.errno
    return None if _may(directory, os.W_OK | os.X_OK) else errno.EACCES


def _may(path: str, mode: int) -> bool:
    return os.access(path, mode, effective_ids=os.access in os.supports_effective_ids)


def _existing_problem(path: str, mode: int) -> int | None:
    if stat.S_ISDIR(mode):
        return errno.EISDIR
    if stat.S_ISSOCK(mode):
        return errno.ENXIO  # what open() gets for a socket
    if not stat.S_ISREG(mode):
        # A FIFO (serve would wait for a reader) or a device (opening one may act: a watchdog,
        # a tape): the permission only.
        return None if _may(path, os.W_OK) else errno.EACCES
    try:  # without O_CREAT, so nothing is made if it is gone by now. Not modelled: the
        # EACCES fs.protected_regular gives O_CREAT on another user's file in a sticky /tmp.
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK | os.O_NOCTTY
                         | os.O_CLOEXEC))
    except OSError as exc:
        return exc.errno
    return None
