"""The psycopg (sync, async) and asyncpg helpers set the context for one transaction only."""

from __future__ import annotations

import asyncpg
import psycopg
import pytest
from pgsupport import Database
from tenantgate.backend import ContextRequired
from tenantgate.backend import asyncpg as tg_asyncpg
from tenantgate.backend.common import bind_context, unbind_context
from tenantgate.backend.psycopg import async_tenant_transaction, tenant_transaction


def _asyncpg_dsn(db: Database) -> str:
    return f"postgresql://app@127.0.0.1:{db.cluster.port}/{db.name}"


async def test_psycopg_async_transaction_sees_own_rows_then_nothing(db: Database) -> None:
    async with await psycopg.AsyncConnection.connect(db.dsn("app"), autocommit=True) as conn:
        async with async_tenant_transaction(conn, db.ring.sign("globex", "s", "r", 60)):
            cur = await conn.execute("SELECT id FROM invoices")
            assert await cur.fetchall() == [(3,)]
        cur = await conn.execute("SELECT count(*) FROM invoices")
        assert await cur.fetchone() == (0,)


async def test_asyncpg_pooled_connection_reused_after_tenant_transaction_has_no_context(
        db: Database) -> None:
    pool = await asyncpg.create_pool(_asyncpg_dsn(db), min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            async with tg_asyncpg.tenant_transaction(conn, db.ring.sign("acme", "s", "r", 60)):
                assert await conn.fetchval("SELECT count(*) FROM invoices") == 2
            first_pid = conn.get_server_pid()
        async with pool.acquire() as conn:  # the same server connection, next user
            assert conn.get_server_pid() == first_pid
            assert await conn.fetchval("SELECT count(*) FROM invoices") == 0
            assert await conn.fetchval("SELECT tenantgate.current_tenant()") is None
    finally:
        await pool.close()


async def test_asyncpg_refuses_to_run_inside_an_outer_transaction(db: Database) -> None:
    conn = await asyncpg.connect(_asyncpg_dsn(db))
    try:
        async with conn.transaction():
            with pytest.raises(RuntimeError, match="not in a transaction"):
                async with tg_asyncpg.tenant_transaction(conn, db.ring.sign("a", "s", "r", 60)):
                    pass
    finally:
        await conn.close()


def test_psycopg_refuses_to_run_inside_an_outer_transaction(db: Database) -> None:
    with psycopg.connect(db.dsn("app")) as conn:  # not autocommit: a transaction is open
        conn.execute("SELECT 1")
        with pytest.raises(RuntimeError, match="not in a transaction"), \
                tenant_transaction(conn, db.ring.sign("acme", "s", "r", 60)):
            pass


def test_no_context_is_refused_before_touching_the_database(db: Database) -> None:
    with db.connect() as conn:
        with pytest.raises(ContextRequired), tenant_transaction(conn):
            pass
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


async def test_a_context_holding_a_nul_is_refused_by_every_helper(db: Database) -> None:
    # It reached the driver, which failed with its own error (psycopg DataError, asyncpg
    # CharacterNotInRepertoireError) instead of ContextRequired.
    signed = db.ring.sign("acme", "s", "r", 60)
    nul = signed[:5] + "\x00" + signed[5:]
    with db.connect() as conn, pytest.raises(ContextRequired), tenant_transaction(conn, nul):
        pass
    async with await psycopg.AsyncConnection.connect(db.dsn("app"), autocommit=True) as aconn:
        with pytest.raises(ContextRequired):
            async with async_tenant_transaction(aconn, nul):
                pass
    conn2 = await asyncpg.connect(_asyncpg_dsn(db))
    try:
        with pytest.raises(ContextRequired):
            async with tg_asyncpg.tenant_transaction(conn2, nul):
                pass
    finally:
        await conn2.close()


def test_local_verification_refuses_a_forged_context(db: Database) -> None:
    forged = db.retired_ring.sign("acme", "s", "r", 60)
    with db.connect() as conn, pytest.raises(ContextRequired), \
            tenant_transaction(conn, forged, verify_with=db.ring):
        pass


def test_context_bound_by_the_middleware_is_used_when_none_is_given(db: Database) -> None:
    token = bind_context(db.ring.sign("globex", "s", "r", 60))
    try:
        with db.connect() as conn, tenant_transaction(conn):
            assert conn.execute("SELECT id FROM invoices").fetchall() == [(3,)]
    finally:
        unbind_context(token)


def _query_text_of(db: Database, pid: int) -> str:
    with db.connect() as observer:
        row = observer.execute("SELECT query FROM pg_stat_activity WHERE pid = %s",
                               [pid]).fetchone()
    assert row is not None
    return str(row[0])


def test_psycopg_binds_the_context_even_on_a_client_cursor_connection(db: Database) -> None:
    # A ClientCursor interpolates parameters into the query text, which another session of the
    # same role reads in pg_stat_activity: a live context there could be replayed.
    signed = db.ring.sign("acme", "s", "r", 60)
    with psycopg.connect(db.dsn("app"), autocommit=True,
                         cursor_factory=psycopg.ClientCursor) as conn, \
            tenant_transaction(conn, signed):
        text = _query_text_of(db, conn.info.backend_pid)
        assert "$1" in text
        assert signed not in text
        assert conn.execute("SELECT count(*) FROM invoices").fetchone() == (2,)


async def test_psycopg_async_binds_the_context_on_a_client_cursor_connection(
        db: Database) -> None:
    signed = db.ring.sign("acme", "s", "r", 60)
    async with await psycopg.AsyncConnection.connect(
            db.dsn("app"), autocommit=True, cursor_factory=psycopg.AsyncClientCursor) as conn, \
            async_tenant_transaction(conn, signed):
        text = _query_text_of(db, conn.info.backend_pid)
        assert "$1" in text
        assert signed not in text
