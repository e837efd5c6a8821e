"""The reference backend: a per-tenant notes HTTP service whose queries have no tenant filter.

Run: python -m tenantgate.backend.notes_app --dsn "<app role DSN>" --listen 127.0.0.1:8080
     [--setup-dsn "<owner DSN>"]   # create + isolate notes (after `tenantgate db install`)

Routes (JSON): GET /notes, POST /notes, GET|PUT|DELETE /notes/<id>, GET /whoami,
GET /healthz, and with --debug-headers GET /debug/headers (every header this service received,
unauthenticated: for tests, never in production). Every response carries
`x-backend-saw-tenant-id` (the x-tenant-id value received, or "-") so tests can prove what
reached the backend. Postgres RLS alone keeps tenants apart.
"""

from __future__ import annotations

import argparse
import json
import logging
import queue
import re
import selectors
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row

from tenantgate.backend.common import ContextRequired
from tenantgate.backend.middleware import StartResponse, TenantContextWSGIMiddleware, WSGIApp
from tenantgate.backend.psycopg import tenant_transaction
from tenantgate.context import utf8_json

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS notes (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id  text NOT NULL DEFAULT tenantgate.current_tenant(),
    title      text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    body       text NOT NULL DEFAULT '' CHECK (length(body) <= 10000),
    created_by text DEFAULT tenantgate.current_subject(),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS notes_tenant_id_created_at_idx ON notes (tenant_id, created_at);
SELECT tenantgate.isolate('notes');
"""
_COLUMNS = "id::text, tenant_id, title, body, created_by, created_at::text, updated_at::text"
_NOTE_PATH = re.compile(r"^/notes/([0-9a-fA-F-]{36})$")
_HEADERS_SEEN = "x-backend-saw-tenant-id"
DEBUG_HEADERS_PATH = "/debug/headers"
_log = logging.getLogger(__name__)


def setup_database(owner_dsn: str, app_role: str) -> None:
    """Create and isolate `notes`, grant the app role its DML and take from it (and PUBLIC) the
    rights to create tables beside them. Needs `tenantgate db install`."""
    with psycopg.connect(owner_dsn, autocommit=True) as conn:
        installed = conn.execute("SELECT to_regprocedure('tenantgate.isolate(regclass,name)')")
        if installed.fetchone()[0] is None:  # type: ignore[index]
            raise RuntimeError("tenantgate SQL is not installed: run `tenantgate db install`")
        database = conn.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
        role = sql.Identifier(app_role)
        with conn.transaction():
            conn.execute(SCHEMA_SQL)
            conn.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON notes TO {}")
                         .format(role))
            # As docs/postgres.md advises: on a server session clients share, one client's
            # TEMP TABLE notes would take the next tenants' notes, without RLS (db lint:
            # app_role_creates_objects). Only the database's owner (or a superuser) can take
            # TEMPORARY from PUBLIC; for anyone else Postgres warns and lint still reports it.
            conn.execute(sql.SQL("REVOKE TEMPORARY ON DATABASE {} FROM PUBLIC, {}")
                         .format(sql.Identifier(database), role))
            conn.execute(sql.SQL("REVOKE CREATE ON SCHEMA public FROM PUBLIC, {}").format(role))


class ConnectionPool:
    """A small thread-safe pool. A connection goes back reset (DISCARD ALL) or not at all, and
    one the server ended meanwhile (a restart, pg_terminate_backend) is dropped at checkout."""

    slot_wait_seconds = 10.0  # then queue.Full: the app answers 503

    def __init__(self, dsn: str, max_size: int = 8) -> None:
        self.dsn = dsn
        self._idle: queue.LifoQueue[psycopg.Connection[Any]] = queue.LifoQueue()
        self._slots = queue.Queue[None](max_size)

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        self._slots.put(None, timeout=self.slot_wait_seconds)
        try:
            conn = self._checkout()
            try:
                yield conn
            finally:
                self._checkin(conn)
        finally:
            self._slots.get_nowait()

    def _checkout(self) -> psycopg.Connection[Any]:
        while True:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                # No automatic prepared statements: DISCARD ALL drops them on the server, and
                # psycopg (3.3) forgets its own only when it first sees that command, so the
                # next request would use a statement that is gone.
                return psycopg.connect(self.dsn, autocommit=True, connect_timeout=5,
                                       prepare_threshold=None)
            if _server_is_silent(conn):
                return conn
            conn.close()  # and try the next: after a restart every idle one is dead

    def _checkin(self, conn: psycopg.Connection[Any]) -> None:
        # Whatever a request left on its session (a SET, a session-level set_config of the
        # context, a temporary table, an advisory lock, a LISTEN) must not reach the next one.
        if not conn.closed and conn.info.transaction_status == TransactionStatus.IDLE:
            try:
                conn.execute("DISCARD ALL")
            except psycopg.Error:
                pass
            else:
                self._idle.put(conn)
                return
        conn.close()

    def close(self) -> None:
        while not self._idle.empty():
            self._idle.get_nowait().close()


def _server_is_silent(conn: psycopg.Connection[Any]) -> bool:
    """Nothing to read on an idle connection. The server sends an idle session nothing unasked
    but its end: the FATAL of pg_terminate_backend or of a shutdown, or the socket's close.
    Looking costs no round trip; a connection ended after this look fails its request (503)."""
    if conn.closed:
        return False
    with selectors.DefaultSelector() as selector:
        selector.register(conn.fileno(), selectors.EVENT_READ)
        return not selector.select(timeout=0)


class HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


_REASONS = {200: "OK", 201: "Created", 204: "No Content", 400: "Bad Request",
            401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
            405: "Method Not Allowed", 500: "Internal Server Error", 503: "Service Unavailable"}


class NotesApp:
    """The WSGI application (wrap it in TenantContextWSGIMiddleware, as make_app does)."""

    def __init__(self, pool: ConnectionPool, debug_headers: bool = False) -> None:
        self.pool = pool
        self.debug_headers = debug_headers

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        try:
            status, result = self.route(environ)
        except HTTPError as exc:
            status, result = exc.status, {"error": str(exc)}
        except ContextRequired:
            status, result = 401, {"error": "tenant context required"}
        except (psycopg.OperationalError, queue.Full):  # Full: no pool slot in slot_wait_seconds
            status, result = 503, {"error": "database unavailable"}
        except psycopg.Error:
            # Any other database error is a bug (here or in the schema): its traceback goes to
            # the log, and the client gets a 500 rather than a connection closed without answer.
            _log.exception("database error")
            status, result = 500, {"error": "internal error"}
        body = b"" if status == 204 else json.dumps(result).encode()
        start_response(f"{status} {_REASONS.get(status, 'Error')}", [
            ("Content-Type", "application/json"),
            (_HEADERS_SEEN, environ.get("HTTP_X_TENANT_ID", "-"))])
        return [body]

    def route(self, environ: dict[str, Any]) -> tuple[int, Any]:
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        if path == "/healthz":
            return 200, {"status": "ok"}
        if path == DEBUG_HEADERS_PATH and self.debug_headers:
            return 200, {"headers": _received_headers(environ)}
        if path == "/whoami" and method == "GET":
            return 200, self._query_one("SELECT tenantgate.current_tenant() AS tenant, "
                                        "tenantgate.current_subject() AS subject", [])
        if path == "/notes":
            if method == "GET":
                return 200, {"notes": self._query(
                    f"SELECT {_COLUMNS} FROM notes ORDER BY created_at, id", [])}
            if method == "POST":
                return 201, self._create(_json_body(environ))
            raise HTTPError(405, "method not allowed")
        if match := _NOTE_PATH.match(path):
            return self._one(method, match.group(1), environ)
        raise HTTPError(404, "not found")

    def _one(self, method: str, note_id: str, environ: dict[str, Any]) -> tuple[int, Any]:
        if method == "GET":
            row = self._query_one(f"SELECT {_COLUMNS} FROM notes WHERE id = %s", [note_id])
        elif method in ("PUT", "PATCH"):
            row = self._update(note_id, _json_body(environ))
        elif method == "DELETE":
            row = self._query_one("DELETE FROM notes WHERE id = %s RETURNING id::text", [note_id])
            if row is not None:
                return 204, None
        else:
            raise HTTPError(405, "method not allowed")
        if row is None:
            raise HTTPError(404, "not found")  # another tenant's note looks like no note at all
        return 200, row

    def _create(self, data: dict[str, Any]) -> Any:
        fields = _fields(data, required=("title",))
        names = sql.SQL(", ").join(sql.Identifier(n) for n in fields)
        query = sql.SQL("INSERT INTO notes ({}) VALUES ({}) RETURNING " + _COLUMNS).format(
            names, sql.SQL(", ").join(sql.Placeholder() * len(fields)))
        return self._query_one(query, list(fields.values()))

    def _update(self, note_id: str, data: dict[str, Any]) -> Any:
        fields = _fields(data, required=())
        if not fields:
            raise HTTPError(400, "nothing to update")
        sets = sql.SQL(", ").join(
            sql.SQL("{} = {}").format(sql.Identifier(n), sql.Placeholder())
            for n in fields)
        query = sql.SQL("UPDATE notes SET {}, updated_at = now() WHERE id = %s "
                                "RETURNING " + _COLUMNS).format(sets)
        return self._query_one(query, [*fields.values(), note_id])

    def _query(self, query: Any, params: list[Any]) -> list[dict[str, Any]]:
        # Deliberately no tenant filter anywhere: RLS is the only thing keeping tenants apart.
        with self.pool.connection() as conn, tenant_transaction(conn):
            try:
                with conn.cursor(row_factory=dict_row) as cur:
                    cur.execute(query, params)
                    return cur.fetchall() if cur.description else []
            except psycopg.errors.InsufficientPrivilege:
                raise HTTPError(403, "row violates tenant isolation") from None
            except psycopg.errors.NotNullViolation:
                raise HTTPError(403, "no valid tenant context") from None
            except (psycopg.errors.CheckViolation, psycopg.errors.DataError):
                raise HTTPError(400, "invalid note") from None

    def _query_one(self, query: Any, params: list[Any]) -> dict[str, Any] | None:
        rows = self._query(query, params)
        return rows[0] if rows else None


def _fields(data: dict[str, Any], required: tuple[str, ...]) -> dict[str, Any]:
    # tenant_id is accepted on purpose: RLS WITH CHECK must reject another tenant's id.
    allowed = ("title", "body", "tenant_id")
    fields = {k: data[k] for k in allowed if k in data}
    if any(not isinstance(v, str) for v in fields.values()) or set(data) - set(allowed):
        raise HTTPError(400, f"fields must be strings among {', '.join(allowed)}")
    if missing := [k for k in required if k not in fields]:
        raise HTTPError(400, f"missing {', '.join(missing)}")
    return fields


def _json_body(environ: dict[str, Any]) -> dict[str, Any]:
    raw = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):  # deep nesting: RecursionError
        raise HTTPError(400, "body must be a JSON object") from None
    # A lone-surrogate escape ("\ud800") parses, but no UTF-8 text (nor Postgres) can hold it:
    # the driver would fail mid-request and drop the connection.
    if not isinstance(data, dict) or not utf8_json(data):
        raise HTTPError(400, "body must be a JSON object")
    return data


def _received_headers(environ: dict[str, Any]) -> dict[str, str]:
    headers = {k[5:].lower().replace("_", "-"): v for k, v in environ.items()
               if k.startswith("HTTP_")}
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(key):
            headers[key.lower().replace("_", "-")] = environ[key]
    return dict(sorted(headers.items()))


def make_app(dsn: str, *, header: str = "x-tenant-context", pool_size: int = 8,
             debug_headers: bool = False) -> WSGIApp:
    """The notes WSGI app behind the context middleware (/healthz exempt, and /debug/headers
    when it is on)."""
    exempt = ("/healthz", DEBUG_HEADERS_PATH) if debug_headers else ("/healthz",)
    return TenantContextWSGIMiddleware(
        NotesApp(ConnectionPool(dsn, pool_size), debug_headers=debug_headers), header=header,
        exempt_paths=exempt)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tenantgate.backend.notes_app",
                                     description="tenantgate's reference notes backend")
    parser.add_argument("--dsn", required=True, help="DSN of the application role")
    parser.add_argument("--listen", default="127.0.0.1:8080",
                        help="host:port (default %(default)s)")
    parser.add_argument("--setup-dsn", help="table owner DSN: create and isolate the notes table "
                        "(after `tenantgate db install`)")
    parser.add_argument("--header", default="x-tenant-context", help="signed context header")
    parser.add_argument("--access-log", action="store_true")
    parser.add_argument("--debug-headers", action="store_true",
                        help=f"answer GET {DEBUG_HEADERS_PATH} with every header received, "
                             "without a tenant context (tests that prove what reached the "
                             "backend; never in production)")
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    # Checked here, not at the first request: a bad DSN printed "listening" and then failed every
    # request with a traceback, and port 99999 ended in socket's OverflowError.
    if not host or not re.fullmatch(r"[0-9]{1,5}", port) or int(port) > 65535:
        print("error: --listen must be host:port (port 0-65535)", file=sys.stderr)
        return 2
    try:
        conninfo_to_dict(args.dsn)
    except psycopg.Error as exc:
        print(f"error: --dsn: {str(exc).strip()}", file=sys.stderr)
        return 2
    from tenantgate.backend.httpserver import WSGIHTTPServer

    try:
        if args.setup_dsn:
            setup_database(args.setup_dsn, _connected_user(args.dsn))
        server = WSGIHTTPServer((host, int(port)), make_app(args.dsn, header=args.header,
                                                         debug_headers=args.debug_headers),
                                access_log=args.access_log)
    except (psycopg.Error, OSError, RuntimeError) as exc:
        print(f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
              file=sys.stderr)
        return 1
    print(f"notes backend listening on {host}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _connected_user(dsn: str) -> str:
    with psycopg.connect(dsn) as conn:
        return str(conn.info.user)


if __name__ == "__main__":
    sys.exit(main())
