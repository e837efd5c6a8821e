"""Shared benchmark plumbing: throwaway servers, the h2load runner, statistics, CPU accounting."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
from tenantgate.testing.binaries import free_port as free_port  # re-exported for the bench scripts

BIN = Path(sys.executable).parent
CHECK_PATH = "/envoy.service.auth.v3.Authorization/Check"


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


@contextlib.contextmanager
def process(args: list[str], port: int | None = None, log: Path | None = None,
            env: dict[str, str] | None = None) -> Iterator[psutil.Process]:
    """Start a server, wait for its port, stop it by PID afterwards."""
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                            env={**os.environ, **(env or {})})
    try:
        if port is not None:
            wait_for_port(port)
        yield psutil.Process(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if log:
            out.close()  # type: ignore[union-attr]


def grpc_frame(message: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(message)) + message


@dataclass
class LoadResult:
    completed: int
    seconds: float
    latencies_us: list[float]
    server_cpu_s: float
    loadgen_cpu_s: float
    errors: int = 0

    @property
    def rate(self) -> float:
        return self.completed / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies_us:
            return float("nan")
        data = self.latencies_us
        return data[min(len(data) - 1, int(q * len(data)))]

    @property
    def server_cpu_us_per_call(self) -> float:
        return self.server_cpu_s * 1e6 / self.completed if self.completed else float("nan")


def cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds of a process's live threads, grouped: `main` (the event loop's thread),
    `event_engine` (gRPC core's own threads, named so by gRPC), `other` (gRPC's completion
    queue poller, the metrics server...). A thread that ends between two readings takes its
    seconds with it; the servers measured here keep theirs for their whole life."""
    groups = {"main": 0.0, "event_engine": 0.0, "other": 0.0}
    for thread in psutil.Process(pid).threads():
        try:
            comm = Path(f"/proc/{pid}/task/{thread.id}/comm").read_text().strip()
        except OSError:
            continue  # ended since threads() listed it
        group = ("main" if thread.id == pid
                 else "event_engine" if comm.startswith("event_engine") else "other")
        groups[group] += thread.user_time + thread.system_time
    return groups


def h2load(port: int, body: bytes, seconds: float, connections: int, streams: int,
           server: psutil.Process) -> LoadResult:
    exe = shutil.which("h2load")
    if exe is None:
        raise RuntimeError("h2load not found: apt-get install nghttp2-client")
    with tempfile.TemporaryDirectory() as tmp:
        body_file, log_file = Path(tmp, "body"), Path(tmp, "log.tsv")
        body_file.write_bytes(grpc_frame(body))
        cpu_before = cpu_seconds(server)
        proc = subprocess.Popen(
            [exe, "-D", str(max(1, round(seconds))), "--warm-up-time", "1", "-c", str(connections),
             "-m", str(streams), "-t", "1", "-d", str(body_file),
             "-H", "content-type: application/grpc", "-H", "te: trailers",
             "--log-file", str(log_file), f"http://127.0.0.1:{port}{CHECK_PATH}"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        watched = psutil.Process(proc.pid)
        loadgen_cpu = 0.0
        while proc.poll() is None:
            with contextlib.suppress(psutil.Error):
                loadgen_cpu = cpu_seconds(watched)
            time.sleep(0.1)
        output = proc.stdout.read().decode() if proc.stdout else ""
        server_cpu = cpu_seconds(server) - cpu_before
        if not log_file.exists():
            raise RuntimeError(f"h2load failed:\n{output}")
        rows = [line.split("\t") for line in log_file.read_text().splitlines() if line]
    latencies = sorted(float(r[2]) for r in rows if len(r) >= 3 and r[1] == "200")
    # h2load's req/s covers the main duration only (after warm-up), like its log file.
    match = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", output)
    elapsed = len(latencies) / float(match.group(1)) if match and float(match.group(1)) else seconds
    failed = re.search(r"(\d+) failed", output)
    return LoadResult(len(latencies), elapsed, latencies, server_cpu, loadgen_cpu,
                      errors=int(failed.group(1)) if failed else 0)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")
