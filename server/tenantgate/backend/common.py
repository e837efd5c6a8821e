"""The names every backend helper shares and the per-request context variable."""

from __future__ import annotations

import contextvars

from tenantgate.context import CONTEXT_SHAPE, MAX_CONTEXT_BYTES, InvalidContext, KeyRing

SETTING = "tenantgate.context"
DEFAULT_HEADER = "x-tenant-context"
# is_local = true: the value dies with the transaction, so it can never reach the next user of a
# pooled connection, nor another client behind PgBouncer in transaction pooling mode.
SET_CONTEXT_SQL = "SELECT set_config('tenantgate.context', %s, true)"
SET_CONTEXT_ASYNCPG = "SELECT set_config('tenantgate.context', $1, true)"

_request_context: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "tenantgate_request_context", default=None)


class ContextRequired(RuntimeError):
    """No usable signed tenant context: refuse to touch tenant data (fail closed)."""


def current_context() -> str | None:
    """The signed context of the request being handled (set by the middleware), if any."""
    return _request_context.get()


def bind_context(context: str | None) -> contextvars.Token[str | None]:
    return _request_context.set(context)


def unbind_context(token: contextvars.Token[str | None]) -> None:
    _request_context.reset(token)


def accept(value: str | None, verify_with: KeyRing | None = None) -> str:
    """The context to use, or ContextRequired. With a key ring it is verified locally first, so a
    bad context is refused before a database round trip; Postgres verifies it again anyway."""
    if not value or len(value) > MAX_CONTEXT_BYTES or not CONTEXT_SHAPE.fullmatch(value):
        # Anything else (a NUL, say) made the driver raise its own error, not ContextRequired.
        raise ContextRequired("no usable tenant context")
    if verify_with is not None:
        try:
            verify_with.verify(value)
        except (InvalidContext, TypeError, ValueError):
            raise ContextRequired("tenant context did not verify") from None
    return value


def resolve(context: str | None, verify_with: KeyRing | None) -> str:
    """An explicit context wins; otherwise the one the middleware bound for this request."""
    return accept(context if context is not None else current_context(), verify_with)
