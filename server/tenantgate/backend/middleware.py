"""ASGI and WSGI middleware: take the signed context header, refuse requests that lack one."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from tenantgate.backend.common import (
    DEFAULT_HEADER,
    ContextRequired,
    accept,
    bind_context,
    unbind_context,
)
from tenantgate.context import KeyRing

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

# Same body whatever was wrong (missing, duplicated, unverifiable): nothing to probe.
REFUSAL_STATUS = 401
REFUSAL_BODY = json.dumps({"error": "tenant context required"}).encode()
ENVIRON_KEY = "tenantgate.context"


def _single(values: list[str], verify_with: KeyRing | None) -> str:
    # Two copies of the header (or a comma-joined value) are ambiguous: refuse rather than pick.
    if len(values) != 1 or "," in values[0]:
        raise ContextRequired("ambiguous tenant context")
    return accept(values[0].strip(), verify_with)


class TenantContextMiddleware:
    """ASGI: binds the request's context (see `current_context()`) and puts it in
    `scope["state"]["tenant_context"]`; without one, answers 401 to an HTTP request and refuses
    a WebSocket handshake (the server answers 403), never calling the app. Other scopes
    (lifespan) pass through."""

    def __init__(self, app: ASGIApp, *, header: str = DEFAULT_HEADER,
                 verify_with: KeyRing | None = None,
                 exempt_paths: Iterable[str] = ("/healthz",)) -> None:
        self.app = app
        self.header = header.lower().encode("latin-1")
        self.verify_with = verify_with
        self.exempt_paths = frozenset(exempt_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope.get("path") in self.exempt_paths:
            await self.app(scope, receive, send)
            return
        values = [v.decode("latin-1") for k, v in scope.get("headers", ()) if k == self.header]
        try:
            context = _single(values, self.verify_with)
        except ContextRequired:
            if scope["type"] == "websocket":
                await receive()  # websocket.connect; a close before accept is a 403
                await send({"type": "websocket.close", "code": 1008})  # policy violation
            else:
                await _refuse_asgi(send)
            return
        scope.setdefault("state", {})["tenant_context"] = context
        token = bind_context(context)
        try:
            await self.app(scope, receive, send)
        finally:
            unbind_context(token)


async def _refuse_asgi(send: Send) -> None:
    await send({"type": "http.response.start", "status": REFUSAL_STATUS,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(REFUSAL_BODY)).encode())]})
    await send({"type": "http.response.body", "body": REFUSAL_BODY})


class TenantContextWSGIMiddleware:
    """WSGI: binds the request's context (see `current_context()`) and puts it in
    `environ["tenantgate.context"]`; answers 401 without calling the app when it is missing.

    The binding lasts while the app is called; build the response body inside that call
    (a lazily streamed body no longer sees `current_context()`)."""

    def __init__(self, app: WSGIApp, *, header: str = DEFAULT_HEADER,
                 verify_with: KeyRing | None = None,
                 exempt_paths: Iterable[str] = ("/healthz",)) -> None:
        self.app = app
        self.environ_key = "HTTP_" + header.upper().replace("-", "_")
        self.verify_with = verify_with
        self.exempt_paths = frozenset(exempt_paths)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") in self.exempt_paths:
            return self.app(environ, start_response)
        raw = environ.get(self.environ_key)
        try:
            context = _single([] if raw is None else [raw], self.verify_with)
        except ContextRequired:
            start_response(f"{REFUSAL_STATUS} Unauthorized",
                           [("Content-Type", "application/json"),
                            ("Content-Length", str(len(REFUSAL_BODY)))])
            return [REFUSAL_BODY]
        environ[ENVIRON_KEY] = context
        token = bind_context(context)
        try:
            return self.app(environ, start_response)
        finally:
            unbind_context(token)
