"""The reference notes backend over real HTTP: its queries have no tenant filter, RLS isolates."""

from __future__ import annotations

import select
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import psycopg
import pytest
from pgsupport import Database
from tenantgate.backend.httpserver import SOCKET_TIMEOUT_SECONDS, WSGIHTTPServer, serve_in_thread
from tenantgate.backend.middleware import WSGIApp
from tenantgate.backend.notes_app import ConnectionPool, make_app, setup_database
from tenantgate.db.lint import lint
from tenantgate.testing.binaries import free_port
from tenantgate.testing.ports import in_use, on_fresh_ports


@pytest.fixture(scope="module")
def notes_db(cluster: object) -> Database:
    from pgsupport import create_database

    database = create_database(cluster, "notes")  # type: ignore[arg-type]
    setup_database(database.dsn("table_owner"), "app")
    return database


@contextmanager
def serving(app: WSGIApp,
            socket_timeout: float = SOCKET_TIMEOUT_SECONDS) -> Iterator[WSGIHTTPServer]:
    """The app on a server thread of its own, and its pool closed after."""
    server, thread = serve_in_thread(app, socket_timeout=socket_timeout)
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        app.app.pool.close()  # type: ignore[attr-defined]


def url(server: WSGIHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture(scope="module")
def base_url(notes_db: Database) -> Iterator[str]:
    with serving(make_app(notes_db.dsn("app"), debug_headers=True)) as server:
        yield url(server)


def client(db: Database, base_url: str, tenant: str | None) -> httpx.Client:
    headers = {"x-tenant-id": tenant or ""}
    if tenant is not None:
        headers["x-tenant-context"] = db.ring.sign(tenant, f"user-of-{tenant}", "r", 60)
    return httpx.Client(base_url=base_url, headers=headers, timeout=10)


def test_crud_for_one_tenant_and_nothing_across_tenants(notes_db: Database, base_url: str) -> None:
    with client(notes_db, base_url, "acme") as acme, client(notes_db, base_url, "globex") as gx:
        created = acme.post("/notes", json={"title": "plan", "body": "secret acme plan"})
        assert created.status_code == 201
        note = created.json()
        assert (note["tenant_id"], note["created_by"]) == ("acme", "user-of-acme")
        path = f"/notes/{note['id']}"
        assert [n["id"] for n in acme.get("/notes").json()["notes"]] == [note["id"]]
        assert gx.get("/notes").json() == {"notes": []}
        assert gx.get(path).status_code == 404
        assert gx.put(path, json={"title": "pwned"}).status_code == 404
        assert gx.delete(path).status_code == 404
        assert acme.get(path).json()["title"] == "plan"
        assert acme.put(path, json={"body": "v2"}).json()["body"] == "v2"
        assert acme.delete(path).status_code == 204
        assert acme.get(path).status_code == 404


def test_writing_another_tenants_id_is_refused(notes_db: Database, base_url: str) -> None:
    with client(notes_db, base_url, "acme") as acme:
        refused = acme.post("/notes", json={"title": "x", "tenant_id": "globex"})
        assert (refused.status_code, refused.json()) == (
            403, {"error": "row violates tenant isolation"})
        note = acme.post("/notes", json={"title": "mine"}).json()
        moved = acme.put(f"/notes/{note['id']}", json={"tenant_id": "globex"})
        assert moved.status_code == 403


@pytest.mark.parametrize("body", [b"[" * 100_000, b"not json", b"[1, 2]",
                                  b'{"title": "\\ud800"}'],
                         ids=["deeply-nested", "not-json", "not-an-object", "lone-surrogate"])
def test_a_body_that_is_not_a_json_object_is_a_clean_400(
        notes_db: Database, base_url: str, body: bytes) -> None:
    with client(notes_db, base_url, "acme") as acme:
        response = acme.post("/notes", content=body,
                             headers={"content-type": "application/json"})
    assert (response.status_code, response.json()) == (400, {"error": "body must be a JSON object"})


def test_no_free_database_connection_is_a_503_not_a_dropped_connection(
        notes_db: Database) -> None:
    app = make_app(notes_db.dsn("app"), pool_size=1)
    pool = app.app.pool  # type: ignore[attr-defined]
    pool.slot_wait_seconds = 0.01
    with serving(app) as server, pool.connection(), \
            client(notes_db, url(server), "acme") as acme:  # the only slot, held
        response = acme.get("/notes")
    assert (response.status_code, response.json()) == (503, {"error": "database unavailable"})


def test_a_context_holding_a_nul_is_a_401_not_a_dropped_connection(
        notes_db: Database, base_url: str) -> None:
    # psycopg raised DataError, which the app did not catch: http.server printed a traceback
    # and closed the connection with no answer. (httpx refuses to send a NUL: a raw socket.)
    signed = notes_db.ring.sign("acme", "s", "r", 60).encode()
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(b"GET /notes HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                     b"x-tenant-context: " + signed[:5] + b"\x00" + signed[5:] + b"\r\n\r\n")
        answer = b"".join(iter(lambda: conn.recv(4096), b""))
    assert answer.startswith(b"HTTP/1.1 401 ")


def test_any_other_database_error_is_a_500_not_a_dropped_connection(
        notes_db: Database, fresh_db: Database, caplog: pytest.LogCaptureFixture) -> None:
    # fresh_db has no notes table: UndefinedTable, a ProgrammingError the app did not catch.
    with serving(make_app(fresh_db.dsn("app"))) as server, \
            client(fresh_db, url(server), "acme") as acme:
        response = acme.get("/notes")
    assert (response.status_code, response.json()) == (500, {"error": "internal error"})
    assert "UndefinedTable" in caplog.text  # the traceback is logged, not sent


def test_every_request_succeeds_after_the_server_ended_the_pooled_connections(
        notes_db: Database) -> None:
    # As after a Postgres restart: each pooled connection was handed out dead once, a 503.
    app = make_app(notes_db.dsn("app"), pool_size=4)
    pool = app.app.pool  # type: ignore[attr-defined]
    with serving(app) as server:
        with pool.connection() as a, pool.connection() as b, pool.connection() as c:
            pids = [conn.info.backend_pid for conn in (a, b, c)]
        with psycopg.connect(notes_db.dsn("postgres"), autocommit=True) as admin:
            # The timeout makes it wait until each backend has exited.
            ended = admin.execute("SELECT bool_and(pg_terminate_backend(pid, 30000))"
                                  " FROM unnest(%s::int[]) AS pid", [pids]).fetchone()
        assert ended == (True,)
        with client(notes_db, url(server), "acme") as acme:
            assert [acme.get("/notes").status_code for _ in range(4)] == [200] * 4


def test_a_session_setting_does_not_reach_the_next_user_of_a_pooled_connection(
        notes_db: Database) -> None:
    # set_config(..., false) outlives the transaction: the next request on this connection ran
    # as acme without any context of its own.
    pool = ConnectionPool(notes_db.dsn("app"), max_size=1)
    try:
        with pool.connection() as conn:
            conn.execute("SELECT set_config('tenantgate.context', %s, false)",
                         [notes_db.ring.sign("acme", "alice", "r", 60)])
            first = conn.info.backend_pid
        with pool.connection() as conn:
            assert conn.info.backend_pid == first  # the same session, reset
            assert conn.execute("SELECT tenantgate.current_tenant()").fetchone() == (None,)
    finally:
        pool.close()


def test_a_client_that_never_sends_its_body_is_disconnected(notes_db: Database) -> None:
    # It held a server thread for ever.
    with serving(make_app(notes_db.dsn("app")), socket_timeout=0.5) as server, \
            socket.create_connection(server.server_address[:2], timeout=30) as conn:
        conn.sendall(b"POST /notes HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
        assert conn.recv(64) == b""  # closed by the server, with no answer


def test_a_client_that_drips_its_body_is_disconnected(notes_db: Database) -> None:
    # Each read came within the socket timeout, so a byte every 0.2 s held a thread for as
    # long as the client liked. The body as a whole now gets one timeout.
    with serving(make_app(notes_db.dsn("app")), socket_timeout=0.5) as server, \
            socket.create_connection(server.server_address[:2], timeout=30) as conn:
        conn.sendall(b"POST /notes HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
        answer = b"unsent"
        for _ in range(100):
            try:
                conn.sendall(b"x")
            except OSError:  # reset by the server
                answer = b""
                break
            ready, _, _ = select.select([conn], [], [], 0.2)
            if ready:
                answer = conn.recv(64)
                break
        assert answer == b""  # closed by the server before the body was whole, with no answer


def test_a_content_length_of_non_ascii_digits_is_a_400(base_url: str) -> None:
    # The server decodes headers as latin-1: the byte 0xB2 is "²", which isdigit() takes and
    # int() refuses. Before, the connection closed with no answer.
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(b"POST /notes HTTP/1.1\r\nHost: x\r\nContent-Length: \xb2\r\n\r\n")
        assert conn.recv(64).startswith(b"HTTP/1.1 400 ")


def test_a_content_length_of_thousands_of_digits_is_a_413(base_url: str) -> None:
    # int() refuses more than 4300 digits: the connection closed with no answer.
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(b"POST /notes HTTP/1.1\r\nHost: x\r\nContent-Length: "
                     + b"1" * 5000 + b"\r\n\r\n")
        assert conn.recv(64).startswith(b"HTTP/1.1 413 ")


@pytest.mark.parametrize("header", [
    b"x_tenant_context: forged\r\n",  # WSGI reads it as X-Tenant-Context
    b"x-tenant-id: acme\r\n Set-Cookie: x=1\r\n",  # obsolete line folding, unfolded
], ids=["underscore-name", "folded-value"])
def test_ambiguous_headers_are_a_400(base_url: str, header: bytes) -> None:
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + header + b"\r\n")
        answer = conn.recv(4096)
    assert answer.startswith(b"HTTP/1.1 400 ") and b"Set-Cookie" not in answer


def test_request_without_context_header_is_refused_before_the_handler(
        notes_db: Database, base_url: str) -> None:
    with client(notes_db, base_url, None) as anonymous:
        response = anonymous.get("/notes")
    assert (response.status_code, response.json()) == (401, {"error": "tenant context required"})


def test_forged_context_header_gets_no_rows_and_cannot_create(
        notes_db: Database, base_url: str) -> None:
    forged = notes_db.retired_ring.sign("acme", "mallory", "r", 60)
    with httpx.Client(base_url=base_url, headers={"x-tenant-context": forged}) as mallory:
        assert mallory.get("/notes").json() == {"notes": []}
        assert mallory.get("/whoami").json() == {"tenant": None, "subject": None}
        assert mallory.post("/notes", json={"title": "x"}).status_code == 403


def test_backend_reports_the_tenant_headers_it_received(notes_db: Database, base_url: str) -> None:
    with client(notes_db, base_url, "acme") as acme:
        response = acme.get("/debug/headers", headers={"x-tenant-id": "as-received"})
    assert response.headers["x-backend-saw-tenant-id"] == "as-received"
    assert response.json()["headers"]["x-tenant-id"] == "as-received"
    assert response.json()["headers"]["x-tenant-context"].count(".") == 2


def _start_notes_app(dsn: str) -> tuple[subprocess.Popen[bytes], int]:
    """The backend as a module on a fresh port, once it says it listens."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tenantgate.backend.notes_app",
                             "--dsn", dsn, "--listen", f"127.0.0.1:{port}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    first = proc.stdout.readline()
    if b"listening on" in first:
        return proc, port
    proc.wait(timeout=10)
    proc.stdout.close()
    if b"in use" in first:  # another process took the port first: on_fresh_ports retries
        raise RuntimeError(in_use(port))
    raise AssertionError(first.decode(errors="replace"))


def test_notes_app_runs_as_a_module_with_dsn_and_listen(notes_db: Database) -> None:
    proc, port = on_fresh_ports(lambda: _start_notes_app(notes_db.dsn("app")))
    try:
        with client(notes_db, f"http://127.0.0.1:{port}", "acme") as acme:
            assert acme.get("/healthz").json() == {"status": "ok"}
            assert acme.get("/whoami").json() == {"tenant": "acme", "subject": "user-of-acme"}
            # The header echo is for tests and off unless --debug-headers. Off, its path is
            # answered like any unknown one: 404 with a context, 401 without.
            assert acme.get("/debug/headers").status_code == 404
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as anonymous:
            assert anonymous.get("/debug/headers").status_code == 401
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stdout.close()  # type: ignore[union-attr]


def test_the_reference_setup_lints_clean_on_a_database_with_the_default_rights(
        fresh_db: Database) -> None:
    # A new database lets PUBLIC create temporary tables (and, up to PostgreSQL 14, objects in
    # schema public): the setup lint reported app_role_creates_objects for its own app role.
    with psycopg.connect(fresh_db.dsn(), autocommit=True) as conn:
        conn.execute(f'GRANT TEMPORARY ON DATABASE "{fresh_db.name}" TO PUBLIC;'
                     " GRANT CREATE ON SCHEMA public TO PUBLIC")
    setup_database(fresh_db.dsn("table_owner"), "app")  # the database's owner
    with psycopg.connect(fresh_db.dsn(), autocommit=True) as conn:
        assert lint(conn, app_roles=("app",)) == []
