"""`tenantgate db ...`: install and print the SQL, lint RLS, manage the context keys."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tenantgate.cli.errors import non_utf8_option
from tenantgate.cli.paths import non_empty_path
from tenantgate.config.files import SECRET_FILE_MAX_BYTES, read_file_or_pipe
from tenantgate.config.load import load_config
from tenantgate.context import MIN_KEY_BYTES, key_id_problem
from tenantgate.errors import ConfigError

Handler = Callable[[argparse.Namespace], int]
_OPTION_NAMES = {"key_id": "KEY_ID"}


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    parser = subparsers.add_parser(
        "db", help="Postgres: install the SQL, lint RLS, manage context keys",
        description="Postgres side of the signed tenant context. The DSN may be empty to use "
                    "the libpq environment (PGHOST, PGUSER, PGPASSWORD, ...); prefer that to a "
                    "password on the command line.")
    commands = parser.add_subparsers(dest="db_command", metavar="DB_COMMAND", required=True)

    install = _command(commands, "install", "install or upgrade the tenantgate SQL (idempotent)",
                       _install)
    install.add_argument("--config", type=non_empty_path, metavar="FILE",
                         help="also sync the keys from this tenantgate config (context.keys)")

    text = "print the versioned SQL for your own migration tool (no database needed)"
    printer = commands.add_parser("print-sql", help=text, description=text)
    printer.add_argument("--from-version", type=int, default=0, metavar="N",
                         help="only the files after schema version N (0 to the latest; "
                              "default: 0, all of them)")
    printer.set_defaults(handler=_until_reader_leaves(_print_sql))

    lint = _command(commands, "lint", "list RLS problems; exit 1 when there is any", _lint)
    lint.add_argument("--tenant-column", default="tenant_id", metavar="NAME",
                      help="the column holding the tenant id: every table with it is checked, "
                           "and none having it is a finding (default: %(default)s)")
    lint.add_argument("--app-role", action="append", default=[], metavar="ROLE",
                      help="a role the application connects as (repeatable): checked, "
                           "directly and through every role it can become, for superuser, "
                           "BYPASSRLS, REPLICATION, CREATEROLE, table ownership, key access, "
                           "TRUNCATE/TRIGGER/REFERENCES, and TEMPORARY or CREATE (temporary "
                           "tables and schemas' objects shadow the tenant tables)")

    add = _command(commands, "add-key", "add a key Postgres accepts", _add_key)
    add.add_argument("key_id", metavar="KEY_ID",
                     help="1 to 32 characters: letters A-Z a-z, digits, _ and -")
    source = add.add_mutually_exclusive_group(required=True)
    source.add_argument("--secret-env", metavar="NAME", help="environment variable with the secret")
    source.add_argument("--secret-file", type=non_empty_path, metavar="PATH",
                        help="file, or pipe (<(vault ...), /dev/stdin), with the secret "
                             "(stripped)")
    add.add_argument("--pending", action="store_true",
                     help="store the key without accepting it yet (activate-key later)")

    for name, handler, text in (("activate-key", _activate_key, "start accepting a pending key"),
                                ("retire-key", _retire_key, "stop accepting a key and erase it")):
        _command(commands, name, text, handler).add_argument("key_id", metavar="KEY_ID")

    sync = _command(commands, "sync-keys", "accept exactly the keys of a tenantgate config; "
                    "retire the others", _sync_keys)
    sync.add_argument("--config", type=non_empty_path, metavar="FILE", required=True)
    _command(commands, "list-keys", "list key ids, states and fingerprints (never secrets)",
             _list_keys)


def _command(commands: Any, name: str, text: str, handler: Handler) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(name, help=text, description=text)
    parser.add_argument("--dsn", default="", help="libpq connection string (default: PG* env)")
    parser.set_defaults(handler=_until_reader_leaves(_guarded(handler)))
    return parser


def _until_reader_leaves(handler: Handler) -> Handler:
    def run(args: argparse.Namespace) -> int:
        try:
            code = handler(args)
            sys.stdout.flush()  # here, not at exit: a reader gone shows up inside the try
            return code
        except BrokenPipeError:
            # `tenantgate db print-sql | head` is no error worth a traceback; exit 1 as the
            # output was cut short. Python flushes stdout once more at exit: give it /dev/null.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 1
    return run


class _Failure(Exception):
    """A one-line error for the user; exit code 1."""


def _guarded(handler: Handler) -> Handler:
    def run(args: argparse.Namespace) -> int:
        # Before anything reaches libpq or SQL, where it was an encoding traceback. Paths are
        # exempt (type=non_empty_path): a file name may hold any bytes.
        if (option := non_utf8_option(args, _OPTION_NAMES)) is not None:
            print(f"error: {option}: not valid UTF-8", file=sys.stderr)
            return 2
        if (problem := _key_id_problem(args)) is not None:
            print(f"error: KEY_ID: {problem}", file=sys.stderr)
            return 2
        try:
            import psycopg
        except ImportError:  # an optional dependency, as envoy-config's is (the image has none)
            print("error: tenantgate db needs psycopg: pip install 'tenantgate[backend]'",
                  file=sys.stderr)
            return 1
        try:
            return handler(args)
        except _Failure as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except psycopg.Error as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            print(f"error: {first}", file=sys.stderr)
            return 1
    return run


def _key_id_problem(args: argparse.Namespace) -> str | None:
    # Before connecting. The database checks too, but a key id not checked ahead of the row once
    # sent the padded key to the server log (in the DETAIL of the failing CHECK).
    key_id = getattr(args, "key_id", None)
    return None if key_id is None else key_id_problem(key_id)


def _connect(args: argparse.Namespace) -> Any:
    import psycopg

    return psycopg.connect(args.dsn, autocommit=True, connect_timeout=10)


def _ring_from_config(path: Path) -> dict[str, bytes]:
    try:
        config = load_config(path)
    except ConfigError as exc:
        raise _Failure(f"{path}: {exc.issues[0]}" + (f" (and {len(exc.issues) - 1} more)"
                                                     if len(exc.issues) > 1 else "")) from None
    return {key.id: key.secret.value for key in config.context.keys}


def _read_secret(args: argparse.Namespace) -> bytes:
    if args.secret_env is not None:
        raw = os.environ.get(args.secret_env)
        if raw is None:
            raise _Failure(f"environment variable {args.secret_env} is not set")
        try:
            # The same bytes as the config loader's fromEnv, which refuses such a value too.
            secret = raw.encode()
        except UnicodeEncodeError:
            raise _Failure(f"environment variable {args.secret_env} is not valid UTF-8") from None
        if secret != secret.strip():  # installed as is, no config could ever name this key
            raise _Failure(f"environment variable {args.secret_env} begins or ends with "
                           "whitespace (a trailing newline?): remove it; a secret cannot "
                           "begin or end with whitespace")
    else:
        secret = _read_secret_file(args.secret_file).strip()
    if len(secret) < MIN_KEY_BYTES:
        raise _Failure(f"the secret must be at least {MIN_KEY_BYTES} bytes")
    return secret


def _read_secret_file(path: Path) -> bytes:
    try:  # a pipe is welcome: --secret-file <(vault read ...) or /dev/stdin
        return read_file_or_pipe(path, SECRET_FILE_MAX_BYTES, "not a secret")
    except ValueError as exc:
        raise _Failure(str(exc)) from None


def _install(args: argparse.Namespace) -> int:
    from tenantgate.db import keys, schema

    ring = _ring_from_config(args.config) if args.config else None
    with _connect(args) as conn:
        try:
            before, after = schema.install(conn)
        except schema.InstallRefused as exc:
            raise _Failure(str(exc)) from None
        print(f"tenantgate SQL at schema version {after}"
              + (" (already installed)" if before == after else f" (was {before})"))
        if ring is not None:
            _print_changes(keys.sync_keys(conn, ring))
    return 0


def _print_sql(args: argparse.Namespace) -> int:
    from tenantgate.db import schema

    latest = schema.latest_version()
    if not 0 <= args.from_version <= latest:
        # Past the latest it printed nothing, as if that database were up to date.
        print(f"tenantgate db print-sql: --from-version: must be from 0 to {latest} (the latest "
              f"schema version), got {args.from_version}", file=sys.stderr)
        return 2
    sys.stdout.write(schema.print_sql(args.from_version))
    return 0


def _lint(args: argparse.Namespace) -> int:
    from tenantgate.db.lint import lint

    with _connect(args) as conn:
        findings = lint(conn, args.tenant_column, tuple(args.app_role))
    for finding in findings:
        print(finding)
    if not args.app_role:
        print("note: no --app-role given, role checks skipped", file=sys.stderr)
    if findings:
        print(f"{len(findings)} finding(s)", file=sys.stderr)
        return 1
    print("no findings")
    return 0


def _add_key(args: argparse.Namespace) -> int:
    from tenantgate.db import keys

    secret = _read_secret(args)
    with _connect(args) as conn:
        print(f"{args.key_id}: {keys.add_key(conn, args.key_id, secret, not args.pending)}")
    return 0


def _activate_key(args: argparse.Namespace) -> int:
    from tenantgate.db import keys

    with _connect(args) as conn:
        print(f"{args.key_id}: {keys.activate_key(conn, args.key_id)}")
    return 0


def _retire_key(args: argparse.Namespace) -> int:
    from tenantgate.db import keys

    with _connect(args) as conn:
        print(f"{args.key_id}: {keys.retire_key(conn, args.key_id)}")
    return 0


def _sync_keys(args: argparse.Namespace) -> int:
    from tenantgate.db import keys

    ring = _ring_from_config(args.config)
    with _connect(args) as conn:
        _print_changes(keys.sync_keys(conn, ring))
    return 0


def _list_keys(args: argparse.Namespace) -> int:
    from tenantgate.db import keys

    with _connect(args) as conn:
        for row in keys.list_keys(conn):
            print(f"{row.key_id}\t{row.state}\t{row.fingerprint[:16]}")
    return 0


def _print_changes(changes: list[tuple[str, str]]) -> None:
    for key_id, outcome in changes:
        print(f"{key_id}: {outcome}")
