"""psycopg 3 helpers (sync and async): a transaction that carries the signed tenant context."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import TypeVar

import psycopg
from psycopg.pq import TransactionStatus

from tenantgate.backend.common import SET_CONTEXT_SQL, resolve
from tenantgate.context import KeyRing

Conn = TypeVar("Conn", bound=psycopg.Connection)
AsyncConn = TypeVar("AsyncConn", bound=psycopg.AsyncConnection)


# The context goes out as a bound parameter through a cursor of our own, whatever the
# connection's cursor_factory: a ClientCursor would write it into the query text, which other
# sessions of the same role read in pg_stat_activity and could replay until it expires.


def _require_idle(status: TransactionStatus) -> None:
    # Inside an outer transaction the setting would outlive our block (a savepoint does not end
    # it) and reach whatever the caller runs next, so refuse instead.
    if status != TransactionStatus.IDLE:
        raise RuntimeError("tenant_transaction needs a connection that is not in a transaction")


@contextmanager
def tenant_transaction(conn: Conn, context: str | None = None, *,
                       verify_with: KeyRing | None = None) -> Iterator[Conn]:
    """`with tenant_transaction(conn, ctx):` runs the block in one transaction whose queries see
    only ctx's tenant. Without ctx, uses the request's context bound by the middleware."""
    value = resolve(context, verify_with)
    _require_idle(conn.info.transaction_status)
    with conn.transaction():
        with psycopg.Cursor(conn) as cursor:
            cursor.execute(SET_CONTEXT_SQL, [value])
        yield conn


@asynccontextmanager
async def async_tenant_transaction(conn: AsyncConn, context: str | None = None, *,
                                   verify_with: KeyRing | None = None) -> AsyncIterator[AsyncConn]:
    """The asyncio twin of tenant_transaction, for psycopg.AsyncConnection."""
    value = resolve(context, verify_with)
    _require_idle(conn.info.transaction_status)
    async with conn.transaction():
        async with psycopg.AsyncCursor(conn) as cursor:
            await cursor.execute(SET_CONTEXT_SQL, [value])
        yield conn
