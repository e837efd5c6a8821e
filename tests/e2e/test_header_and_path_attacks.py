"""Through a real Envoy: spoofed trusted headers are stripped before ext_authz (and tenantgate's
own headers survive), and path tricks never reach another tenant, over HTTP/1.1 and HTTP/2."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from e2e_support import (
    EchoBackend,
    Stack,
    audit_lines,
    header_values,
    raw_h2_request,
    received,
    running_stack,
)
from tenantgate.config.load import load_config
from tenantgate.config.model import METHOD_OVERRIDE_HEADERS, PATH_OVERRIDE_HEADERS
from tenantgate.context import KeyRing

PROTOCOLS = [pytest.param(False, id="http1"), pytest.param(True, id="http2")]
SPOOFED = {"x-tenant-id": "globex", "x-tenant-context": "forged.context.value",
           "x-tenant-subject": "admin", "x-tenant-plan": "enterprise",
           "x-tenant-scopes": "admin:all", "x-tenant-roles": "owner"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, envoy_path: str) -> Iterator[Stack]:
    backend = EchoBackend().start()
    try:
        with running_stack(tmp_path_factory.mktemp("attacks"), upstream=backend.address) as s:
            yield s
    finally:
        backend.stop()


@pytest.fixture(scope="module")
def key_ring(stack: Stack) -> KeyRing:
    ctx = load_config(stack.config_path).context
    return KeyRing({k.id: k.secret.value for k in ctx.keys}, ctx.active_key)


def send(stack: Stack, raw_path: str, headers: Any = None, *, http2: bool = False,
         method: str = "GET") -> httpx.Response:
    """Send `raw_path` byte for byte (httpx would otherwise resolve `..` itself)."""
    with stack.client(http2) as client:
        request = client.build_request(method, "/", headers=headers,
                                       extensions={"target": raw_path.encode()})
        return client.send(request)


def assert_only_tenant(echo: dict[str, Any], tenant: str, key_ring: KeyRing) -> None:
    assert header_values(echo, "x-tenant-id") == [tenant]
    contexts = header_values(echo, "x-tenant-context")
    assert len(contexts) == 1
    assert key_ring.verify(contexts[0]).tenant == tenant


@pytest.mark.parametrize("http2", PROTOCOLS)
def test_allowed_request_reaches_backend_with_tenantgate_headers(
        stack: Stack, key_ring: KeyRing, http2: bool) -> None:
    response = send(stack, "/tenants/acme/notes", stack.auth("acme"), http2=http2)
    echo = received(response)
    assert echo["path"] == "/tenants/acme/notes"
    assert_only_tenant(echo, "acme", key_ring)
    assert header_values(echo, "x-tenant-subject") == ["user-1"]


@pytest.mark.parametrize("http2", PROTOCOLS)
def test_signed_context_carries_the_request_id_the_backend_sees(
        stack: Stack, key_ring: KeyRing, http2: bool) -> None:
    # Envoy's CheckRequest also has an `id`: its internal stream number, which no log or
    # backend shows. The context must carry x-request-id, so a backend's log line and
    # tenantgate's audit line for one request can be joined.
    echo = received(send(stack, "/tenants/acme/notes", stack.auth("acme"), http2=http2))
    [request_id] = header_values(echo, "x-request-id")
    [context] = header_values(echo, "x-tenant-context")
    assert key_ring.verify(context).request_id == request_id


@pytest.mark.parametrize("http2", PROTOCOLS)
def test_spoofed_trusted_headers_never_reach_backend(
        stack: Stack, key_ring: KeyRing, http2: bool) -> None:
    headers = {**stack.auth("acme"), **SPOOFED}
    echo = received(send(stack, "/tenants/acme/notes", headers, http2=http2))
    # The strip ran before ext_authz: the client's copies are gone, tenantgate's survive.
    assert_only_tenant(echo, "acme", key_ring)
    assert header_values(echo, "x-tenant-subject") == ["user-1"]
    for name in ("x-tenant-plan", "x-tenant-scopes", "x-tenant-roles"):
        assert header_values(echo, name) == [], name


@pytest.mark.parametrize("http2", PROTOCOLS)
def test_method_override_headers_never_reach_backend(stack: Stack, http2: bool) -> None:
    # A backend framework that honours them would run DELETE where the route rules were
    # checked for POST.
    headers = [*stack.auth("acme").items(), ("content-length", "0"),
               *((name.upper(), "DELETE") for name in METHOD_OVERRIDE_HEADERS)]
    echo = received(send(stack, "/tenants/acme/notes", headers, http2=http2, method="POST"))
    assert echo["method"] == "POST"
    for name in METHOD_OVERRIDE_HEADERS:
        assert header_values(echo, name) == [], name


# Headers carrying a second path: tenantgate's list, the ones apps behind nginx's
# auth_request or Traefik read, and Envoy's own, which Envoy drops itself (not in the list).
SECOND_PATH_HEADERS = tuple(dict.fromkeys((*PATH_OVERRIDE_HEADERS, "x-original-uri",
                                           "x-forwarded-uri", "x-envoy-original-path")))


@pytest.mark.parametrize("http2", PROTOCOLS)
def test_path_override_headers_never_reach_backend(stack: Stack, http2: bool) -> None:
    # A backend that routes on them would serve globex's path where the rules and the
    # {tenant} segment were checked for acme's.
    headers = [*stack.auth("acme").items(),
               *((name.upper(), "/tenants/globex/notes") for name in SECOND_PATH_HEADERS)]
    echo = received(send(stack, "/tenants/acme/notes", headers, http2=http2))
    assert echo["path"] == "/tenants/acme/notes"
    for name in SECOND_PATH_HEADERS:
        assert header_values(echo, name) == [], name


@pytest.mark.parametrize("http2", PROTOCOLS)
def test_mixed_case_and_repeated_spoofed_headers_are_stripped(
        stack: Stack, key_ring: KeyRing, http2: bool) -> None:
    # Over HTTP/2 the names go lower-cased: two x-tenant-id fields in one HEADERS frame.
    headers = [*stack.auth("acme").items(), ("X-Tenant-ID", "globex"),
               ("x-tenant-id", "initech"), ("X-TENANT-CONTEXT", "forged"),
               ("X-Tenant-Plan", "enterprise"), ("x-tenant-plan", "gold")]
    echo = received(send(stack, "/tenants/acme/notes", headers, http2=http2))
    assert_only_tenant(echo, "acme", key_ring)
    assert header_values(echo, "x-tenant-plan") == []


def test_spoofed_headers_alone_do_not_authenticate(stack: Stack) -> None:
    response = send(stack, "/tenants/globex/notes", SPOOFED)
    assert response.status_code == 401
    assert "x-echo-backend" not in response.headers
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_underscore_variant_of_a_trusted_header_is_refused(stack: Stack) -> None:
    # WSGI/CGI stacks map x_tenant_id and x-tenant-id to the same HTTP_X_TENANT_ID.
    response = send(stack, "/tenants/acme/notes", {**stack.auth("acme"), "x_tenant_id": "globex"})
    assert response.status_code == 400
    assert "x-echo-backend" not in response.headers


@pytest.mark.parametrize("http2", PROTOCOLS)
def test_duplicate_authorization_header_is_refused(stack: Stack, http2: bool) -> None:
    headers = [("authorization", f"Bearer {stack.token('acme')}"),
               ("authorization", f"Bearer {stack.token('globex')}")]
    response = send(stack, "/tenants/globex/notes", headers, http2=http2)
    # Envoy keeps Authorization as one inline header and joins a repeat with "," even in the
    # raw header map; tenantgate reads the comma as the repeat it is: 400, never forwarded.
    assert response.status_code == 400
    assert "x-echo-backend" not in response.headers


# raw path -> the status an `acme` caller gets; none of these may reach globex's data.
CROSS_TENANT_PATHS = {
    "plain": ("/tenants/globex/notes", 404),
    "dot-dot": ("/tenants/acme/../globex/notes", 404),
    "dot-dot-twice": ("/tenants/acme/x/../../globex/notes", 404),
    "dot": ("/tenants/./globex/notes", 404),
    "double-slash": ("//tenants//globex//notes", 404),
    "encoded-slash": ("/tenants/acme%2F..%2Fglobex/notes", 400),
    "encoded-slash-lower": ("/tenants/acme%2f..%2fglobex/notes", 400),
    "encoded-backslash": ("/tenants/acme%5C..%5Cglobex/notes", 400),
    # Envoy decodes one layer and passes these as sent; a backend decoding twice, or reading
    # %uXXXX or overlong UTF-8, would serve `..`: refused (400) rather than bound to acme.
    "double-encoded-slash": ("/tenants/acme%252F..%252Fglobex/notes", 400),
    "double-encoded-dot-dot": ("/tenants/acme/%252e%252e/globex/notes", 400),
    "escaped-escape-dot-dot": ("/tenants/acme/%%32%65%%32%65/globex/notes", 400),  # -> %252e
    "iis-unicode-dot-dot": ("/tenants/acme/%u002e%u002e/globex/notes", 400),
    "overlong-utf8-dot-dot": ("/tenants/acme/%c0%ae%c0%ae/globex/notes", 400),
    "encoded-unreserved": ("/tenants/%67lobex/notes", 404),
    "encoded-dot-dot": ("/tenants/acme/%2E%2E/globex/notes", 404),
    "upper-case-tenant": ("/tenants/GLOBEX/notes", 404),
    "upper-case-prefix": ("/TENANTS/globex/notes", 404),
    # Path parameters after a dot segment (Tomcat and Jetty drop `;...` and then resolve
    # `..`). Envoy 1.40 resolves `..;` as `..` itself, so Check sees /tenants/globex/notes.
    "dot-dot-semicolon": ("/tenants/acme/..;/globex/notes", 404),
    "encoded-dot-dot-semicolon": ("/tenants/acme/%2e%2e;/globex/notes", 400),
    "dot-dot-encoded-semicolon": ("/tenants/acme/..%3B/globex/notes", 400),
}


@pytest.mark.parametrize("http2", PROTOCOLS)
@pytest.mark.parametrize("case", CROSS_TENANT_PATHS.values(), ids=CROSS_TENANT_PATHS.keys())
def test_path_tricks_cannot_cross_tenants(stack: Stack, case: tuple[str, int],
                                          http2: bool) -> None:
    raw_path, status = case
    response = send(stack, raw_path, stack.auth("acme"), http2=http2)
    assert "x-echo-backend" not in response.headers, response.json()
    assert response.status_code == status


@pytest.mark.parametrize("http2", PROTOCOLS)
def test_dot_dot_back_into_own_tenant_is_allowed_on_the_normalized_path(
        stack: Stack, key_ring: KeyRing, http2: bool) -> None:
    echo = received(send(stack, "/tenants/globex/../acme/notes", stack.auth("acme"), http2=http2))
    assert echo["path"] == "/tenants/acme/notes"  # the path Check matched is the one served
    assert_only_tenant(echo, "acme", key_ring)


@pytest.mark.parametrize("method", ["post", "Get"])
def test_a_method_not_in_upper_case_never_reaches_the_backend(stack: Stack, method: str) -> None:
    """Envoy passes an HTTP/2 `:method` as sent (HTTP/1.1 `post` is refused by Envoy itself):
    rules must not read it as POST while rate-limit descriptors and the backend see `post`."""
    status, headers = raw_h2_request(stack.base_url, method, "/tenants/acme/notes",
                                     stack.auth("acme"))
    assert (status, "x-echo-backend" in headers) == (400, False)
    status, headers = raw_h2_request(stack.base_url, method.upper(), "/tenants/acme/notes",
                                     stack.auth("acme"))
    assert (status, "x-echo-backend" in headers) == (200, True)


@pytest.mark.parametrize("http2", PROTOCOLS)
@pytest.mark.parametrize("suffix", ["%0A", "%0d", "%09", "%7F"])
def test_an_escaped_control_character_never_reaches_the_backend(
        stack: Stack, suffix: str, http2: bool) -> None:
    """Envoy passes these escapes as sent; `/admin%0A` would dodge an exact `/admin` rule on
    a backend whose regex router lets `$` match before a final newline."""
    response = send(stack, f"/tenants/acme/notes{suffix}", stack.auth("acme"), http2=http2)
    assert "x-echo-backend" not in response.headers
    assert response.status_code == 400


def exchange(stack: Stack, request: bytes) -> bytes:
    """Send raw HTTP/1.1 bytes and read until Envoy closes (each socket read bounded)."""
    host, port = stack.base_url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(request)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer


def test_two_host_headers_never_reach_the_backend(stack: Stack) -> None:
    """Envoy joins them into `host: a,b` and passes the request on; RFC 9112 3.2 says 400."""
    token = stack.auth("acme")["authorization"]
    answer = exchange(stack, f"GET /tenants/acme/notes HTTP/1.1\r\nHost: a.example\r\n"
                             f"Host: b.example\r\nAuthorization: {token}\r\n"
                             "Connection: close\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 400 ") and b"x-echo-backend" not in answer.lower()


@pytest.mark.parametrize("target", ["http://evil/tenants/globex/notes",
                                    "/tenants/acme\\..\\globex/notes"],
                         ids=["absolute-form", "raw-backslashes"])
def test_raw_request_lines_cannot_cross_tenants(stack: Stack, target: str) -> None:
    # httpx cannot send these: an absolute-form request line (Envoy takes the path from it,
    # and the host) and raw backslashes (Envoy's normalization turns them into `/`).
    token = stack.auth("acme")["authorization"]
    answer = exchange(stack, f"GET {target} HTTP/1.1\r\nHost: api.example\r\n"
                             f"Authorization: {token}\r\nConnection: close\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 404 ") and b"x-echo-backend" not in answer.lower()


@pytest.mark.parametrize("transfer_encoding", ["chunked", "chunked, identity",
                                               "identity, chunked"])
def test_a_smuggled_request_never_reaches_the_shared_backend_connection(
        stack: Stack, key_ring: KeyRing, transfer_encoding: str) -> None:
    """Content-Length and Transfer-Encoding together: were Envoy to forward by one and the app
    read by the other, the body's GET would reach globex's path on the app connection Envoy
    shares between clients, without a Check."""
    smuggled = b"0\r\n\r\nGET /tenants/globex/notes HTTP/1.1\r\nX: "
    token = stack.auth("acme")["authorization"]
    answer = exchange(stack, (f"POST /tenants/acme/notes HTTP/1.1\r\nHost: api.example\r\n"
                              f"Authorization: {token}\r\nContent-Length: {len(smuggled)}\r\n"
                              f"Transfer-Encoding: {transfer_encoding}\r\n\r\n").encode()
                      + smuggled)
    assert answer.startswith(b"HTTP/1.1 400 ") and answer.count(b"HTTP/1.1 ") == 1
    assert b"x-echo-backend" not in answer.lower()
    for _ in range(3):  # Envoy reuses idle app connections: a prefix left on one shows here
        echo = received(send(stack, "/tenants/globex/notes", stack.auth("globex")))
        assert (echo["method"], echo["path"]) == ("GET", "/tenants/globex/notes")
        assert header_values(echo, "x") == []
        assert_only_tenant(echo, "globex", key_ring)


def test_cross_tenant_attempt_is_audited(stack: Stack) -> None:
    send(stack, "/tenants/globex/audit-probe", stack.auth("acme"))
    reasons = [line.get("reason") for line in audit_lines(stack)
               if line.get("path") == "/tenants/globex/audit-probe"]
    assert reasons == ["cross_tenant_path"]


def test_access_log_names_the_tenant(stack: Stack) -> None:
    send(stack, "/tenants/acme/access-log-probe", stack.auth("acme"))
    deadline = time.monotonic() + 5  # Envoy flushes its access log asynchronously
    while time.monotonic() < deadline:
        lines = [json.loads(line) for line in stack.envoy.log_path.read_text().splitlines()
                 if line.startswith("{") and "access-log-probe" in line]
        if lines:
            assert lines[0]["tenant"] == "acme" and lines[0]["status"] == 200
            return
        time.sleep(0.1)
    pytest.fail("no access-log line for the request")
