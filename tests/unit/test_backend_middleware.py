"""ASGI/WSGI middleware refuse requests without exactly one usable context header."""

from __future__ import annotations

import io
from typing import Any

import pytest
from tenantgate.backend import current_context
from tenantgate.backend.middleware import TenantContextMiddleware, TenantContextWSGIMiddleware
from tenantgate.context import KeyRing

RING = KeyRing({"k": b"k" * 32}, "k")
GOOD = RING.sign("acme", "alice", "r", 86400)  # module-level: must outlive a long test run


def wsgi_call(environ_headers: dict[str, str], path: str = "/notes",
              verify_with: KeyRing | None = None) -> tuple[str, bytes, list[str | None]]:
    seen: list[str | None] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append(current_context())
        start_response("200 OK", [])
        return [environ.get("tenantgate.context", "-").encode()]

    statuses: list[str] = []
    environ = {"PATH_INFO": path, "REQUEST_METHOD": "GET", "wsgi.input": io.BytesIO(),
               **environ_headers}
    body = b"".join(TenantContextWSGIMiddleware(app, verify_with=verify_with)(
        environ, lambda status, headers: statuses.append(status)))
    return statuses[0], body, seen


def test_wsgi_binds_the_context_for_the_handler_only() -> None:
    status, body, seen = wsgi_call({"HTTP_X_TENANT_CONTEXT": GOOD})
    assert (status, body, seen) == ("200 OK", GOOD.encode(), [GOOD])
    assert current_context() is None


@pytest.mark.parametrize("headers", [
    {}, {"HTTP_X_TENANT_CONTEXT": ""}, {"HTTP_X_TENANT_CONTEXT": f"{GOOD},{GOOD}"},
    {"HTTP_X_TENANT_CONTEXT": "é" * 3}, {"HTTP_X_TENANT_CONTEXT": "x" * 5000},
    # Not the documented shape (docs/signed-context.md step 1): a driver failed on the NUL.
    {"HTTP_X_TENANT_CONTEXT": GOOD[:5] + "\x00" + GOOD[5:]},
    {"HTTP_X_TENANT_CONTEXT": GOOD.rpartition(".")[0]},
    {"HTTP_X_TENANT_CONTEXT": GOOD[:-1]},
    {"HTTP_X_TENANT_CONTEXT": GOOD[:-1] + "B"},  # unused bits set
], ids=["missing", "empty", "duplicated", "non_ascii", "oversized", "nul", "two_parts",
        "short_signature", "non_canonical_signature"])
def test_wsgi_refuses_without_calling_the_handler(headers: dict[str, str]) -> None:
    status, body, seen = wsgi_call(headers)
    assert (status, body, seen) == ("401 Unauthorized", b'{"error": "tenant context required"}',
                                    [])


def test_wsgi_local_verification_refuses_a_forged_context() -> None:
    forged = KeyRing({"k": b"z" * 32}, "k").sign("acme", "alice", "r", 60)
    assert wsgi_call({"HTTP_X_TENANT_CONTEXT": forged}, verify_with=RING)[0] == "401 Unauthorized"
    assert wsgi_call({"HTTP_X_TENANT_CONTEXT": GOOD}, verify_with=RING)[0] == "200 OK"


def test_wsgi_exempt_path_needs_no_context() -> None:
    assert wsgi_call({}, path="/healthz")[0] == "200 OK"


async def asgi_call(headers: list[tuple[bytes, bytes]], path: str = "/notes",
                    kind: str = "http") -> tuple[list[dict[str, Any]], list[str | None]]:
    seen: list[str | None] = []
    sent: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(current_context())
        assert scope["state"]["tenant_context"] == current_context()
        await send({"type": "http.response.start", "status": 200, "headers": []})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": kind, "path": path, "headers": headers}
    await TenantContextMiddleware(app)(scope, receive, send)
    return sent, seen


async def test_asgi_binds_the_context_for_the_handler() -> None:
    sent, seen = await asgi_call([(b"x-tenant-context", GOOD.encode())])
    assert (sent[0]["status"], seen) == (200, [GOOD])


@pytest.mark.parametrize("headers", [
    [], [(b"x-tenant-context", b"")],
    [(b"x-tenant-context", GOOD.encode()), (b"x-tenant-context", GOOD.encode())],
], ids=["missing", "empty", "two_headers"])
async def test_asgi_refuses_without_calling_the_app(headers: list[tuple[bytes, bytes]]) -> None:
    sent, seen = await asgi_call(headers)
    assert (sent[0]["status"], sent[1]["body"], seen) == (
        401, b'{"error": "tenant context required"}', [])


async def test_asgi_refuses_a_websocket_handshake_without_a_context() -> None:
    sent, seen = await asgi_call([], kind="websocket")
    assert (sent, seen) == ([{"type": "websocket.close", "code": 1008}], [])


async def test_asgi_binds_the_context_for_a_websocket() -> None:
    _, seen = await asgi_call([(b"x-tenant-context", GOOD.encode())], kind="websocket")
    assert seen == [GOOD]
