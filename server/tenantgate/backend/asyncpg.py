"""asyncpg helper: a transaction that carries the signed tenant context."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from tenantgate.backend.common import SET_CONTEXT_ASYNCPG, resolve
from tenantgate.context import KeyRing


@asynccontextmanager
async def tenant_transaction(conn: Any, context: str | None = None, *,
                             verify_with: KeyRing | None = None) -> AsyncIterator[Any]:
    """`async with tenant_transaction(conn, ctx):` for an asyncpg Connection (or a pool's
    connection proxy). Without ctx, uses the request's context bound by the middleware."""
    value = resolve(context, verify_with)
    if conn.is_in_transaction():
        # The setting would outlive this block inside the caller's transaction: refuse.
        raise RuntimeError("tenant_transaction needs a connection that is not in a transaction")
    async with conn.transaction():
        await conn.execute(SET_CONTEXT_ASYNCPG, value)
        yield conn
