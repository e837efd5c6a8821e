"""What backend services import: Postgres transaction helpers and ASGI/WSGI context middleware.

Import the driver-specific helpers from their modules (`tenantgate.backend.psycopg`,
`tenantgate.backend.asyncpg`) so a service only needs the driver it uses.
"""

from tenantgate.backend.common import (
    DEFAULT_HEADER,
    SET_CONTEXT_ASYNCPG,
    SET_CONTEXT_SQL,
    SETTING,
    ContextRequired,
    current_context,
)

__all__ = ["DEFAULT_HEADER", "SETTING", "SET_CONTEXT_ASYNCPG", "SET_CONTEXT_SQL",
           "ContextRequired", "current_context"]
