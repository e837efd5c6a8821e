"""Route rules through the real pipeline: scopes, roles, sizes, content types, deny rules,
path normalization, and the `{tenant}` path binding (404, metric, audit)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from tenantgate.config.model import PolicyConfig
from tenantgate.memo import MAX_MEMO_PATH_CHARS
from tenantgate.policy import (
    MAX_ROUTE_MEMOS,
    RouteMatch,
    compile_routes,
    find_route,
    is_normalized,
)
from tenantgate.testing.check import DevIssuer, LocalCheck, build_config, check_request

IDP = DevIssuer(algorithm="ES256")
ROUTES: list[dict[str, Any]] = [
    {"path": "/tenants/{tenant}/**"},
    {"path": "/files/*/{tenant}"},
    {"path_prefix": "/internal", "action": "deny"},
    {"path_prefix": "/admin", "roles": ["admin", "owner"]},
    {"path_prefix": "/notes", "methods": ["post", "PUT"], "scopes": ["notes:write"],
     "max_body_bytes": "1KiB", "content_types": ["application/json"]},
    {"path_prefix": "/notes"},
    {"path_prefix": "/public/"},
]


@pytest.fixture
async def gate(tmp_path: Path) -> AsyncIterator[LocalCheck]:
    config = build_config(tmp_path, [IDP.config()],
                          policy={"routes": ROUTES, "default_action": "deny"})
    async with LocalCheck(config) as local:
        yield local


async def decide(gate: LocalCheck, path: str, method: str = "GET", tenant: str = "acme",
                 headers: dict[str, str] | None = None, **claims: Any) -> tuple[int, str]:
    token = IDP.token(tenant=tenant, **claims)
    response, audit = await gate.check(check_request(
        path, method, headers={"authorization": f"Bearer {token}", **(headers or {})}))
    assert audit is not None
    status = response.denied_response.status.code if response.HasField("denied_response") else 200
    return status, audit["reason"]


def cross_tenant_count(tenant: str) -> float:
    value = REGISTRY.get_sample_value("tenantgate_cross_tenant_attempts_total",
                                      {"tenant": tenant})
    return value or 0.0


@pytest.mark.parametrize("path", ["/tenants/acme", "/tenants/acme/notes/1", "/files/x/acme"])
async def test_own_tenant_path_is_allowed(gate: LocalCheck, path: str) -> None:
    assert await decide(gate, path) == (200, "ok")


@pytest.mark.parametrize("path", ["/tenants/globex/notes/1", "/tenants/globex",
                                  "/tenants/ACME/notes", "/files/x/globex",
                                  "/TENANTS/globex/notes", "/Files/x/globex"])
async def test_another_tenants_path_is_404_and_counted(gate: LocalCheck, path: str) -> None:
    before = cross_tenant_count("other")
    assert await decide(gate, path) == (404, "cross_tenant_path")
    assert cross_tenant_count("other") == before + 1


@pytest.mark.parametrize("method, path, claims, headers, expected", [
    ("POST", "/notes", {}, {"content-type": "application/json"}, (403, "scope_missing")),
    ("POST", "/notes", {"scope": "notes:read"}, {}, (403, "scope_missing")),
    ("POST", "/notes", {"scope": "notes:read notes:write"},
     {"content-type": "application/json; charset=utf-8", "content-length": "1024"}, (200, "ok")),
    # Scopes are separated by spaces only (RFC 6749 3.3): other whitespace splits nothing.
    ("POST", "/notes", {"scope": "notes:read\u00a0notes:write"},
     {"content-type": "application/json", "content-length": "5"}, (403, "scope_missing")),
    ("POST", "/notes", {"scope": "notes:read\u2028notes:write\tx"},
     {"content-type": "application/json", "content-length": "5"}, (403, "scope_missing")),
    ("POST", "/notes", {"scope": "  notes:read   notes:write "},
     {"content-type": "application/json", "content-length": "5"}, (200, "ok")),
    ("PUT", "/notes/1", {"scope": "notes:write"},
     {"content-type": "application/json", "content-length": "1025"}, (413, "body_too_large")),
    ("POST", "/notes", {"scope": "notes:write"},
     {"content-type": "text/plain", "content-length": "5"}, (415, "content_type_not_allowed")),
    ("POST", "/notes", {"scope": "notes:write"}, {"content-length": "5"},
     (415, "content_type_not_allowed")),
    ("GET", "/notes/1", {}, {}, (200, "ok")),  # only POST/PUT need the scope
    ("GET", "/admin/users", {}, {}, (403, "role_missing")),
    ("GET", "/admin/users", {"roles": ["viewer"]}, {}, (403, "role_missing")),
    ("GET", "/admin", {"roles": ["viewer", "owner"]}, {}, (200, "ok")),
    ("GET", "/internal/debug", {"roles": ["admin"]}, {}, (403, "route_denied")),
    ("GET", "/INTERNAL/debug", {"roles": ["admin"]}, {}, (403, "route_denied")),
    ("GET", "/adminx", {"roles": ["admin"]}, {}, (403, "route_denied")),  # not under /admin
    ("GET", "/elsewhere", {}, {}, (403, "route_denied")),  # default_action: deny
    ("GET", "/public/x", {}, {}, (200, "ok")),
], ids=["no-scope", "read-scope-only", "write-scope-json", "scope-after-no-break-space",
        "scope-after-other-whitespace", "scopes-among-extra-spaces", "body-over-limit",
        "wrong-content-type", "body-without-content-type", "get-needs-no-scope",
        "no-role", "other-role", "any-listed-role", "deny-rule", "deny-rule-other-case",
        "prefix-is-a-segment",
        "default-deny", "prefix-with-slash"])
async def test_route_rules(gate: LocalCheck, method: str, path: str, claims: dict[str, Any],
                           headers: dict[str, str], expected: tuple[int, str]) -> None:
    assert await decide(gate, path, method, headers=headers, **claims) == expected


@pytest.mark.parametrize("path", ["//notes", "/notes//1", "/a/../notes", "/notes/.",
                                  "/notes/./1", "/notes/..", "/notes%2f1", "/notes%2F..%2F",
                                  "/%2e%2e/notes", "/notes%5c1", "/notes\\1", "/notes%001",
                                  "notes", "", "/%61dmin", "/%41DMIN/x", "/notes/%41",
                                  "/notes/%7a", "/notes/%5A", "/notes/%30", "/notes/%2D",
                                  "/notes/%5f", "/notes/%7E",
                                  # Escaped controls: `/internal%0A` would dodge an exact rule
                                  # on a regex router whose `$` matches before a final newline.
                                  "/internal%0A", "/internal%0d", "/internal%09",
                                  "/internal%1F", "/internal%7f",
                                  # Raw, in case a proxy ever lets them through.
                                  "/internal#x", "/internal\x00", "/internal\t",
                                  "/internal ", "/internal\n", "/caf\u00e9", "/\u212aey"])
async def test_paths_envoy_should_have_normalized_are_refused(gate: LocalCheck,
                                                              path: str) -> None:
    assert not is_normalized(path)
    assert await decide(gate, path, roles=["admin"]) == (400, "malformed_request")


@pytest.mark.parametrize("path", [
    "/tenants/acme/%252e%252e/globex/notes", "/tenants/acme/%252E/x",
    "/tenants/acme%252F..%252Fglobex/notes", "/tenants/acme/100%2541",
    "/tenants/acme/%u002e%u002e/globex/notes", "/tenants/acme/%", "/tenants/acme/a%2",
    "/tenants/acme/%zz", "/tenants/acme/%%32%65",
    "/tenants/acme/%c0%ae%c0%ae/globex/notes", "/tenants/acme/%E0%80%AE",
    "/tenants/acme/%FF", "/tenants/acme/%C3", "/tenants/acme/%A9", "/tenants/acme/%C3%A9%A9",
    "/tenants/acme/%ED%A0%80", "/tenants/acme/%F4%90%80%80",
], ids=["double-encoded-dots", "double-encoded-dot-upper", "double-encoded-slash",
        "double-encoded-letter", "iis-unicode-escape", "bare-percent", "short-escape",
        "non-hex-escape", "percent-before-escapes", "overlong-dots", "overlong-dot-3-bytes",
        "latin-1-byte", "truncated-sequence", "lone-continuation", "extra-continuation",
        "surrogate", "past-u10ffff"])
async def test_escapes_a_second_or_lenient_decoder_reads_otherwise_are_refused(
        gate: LocalCheck, path: str) -> None:
    # Envoy decodes one layer only and passes these as sent: a backend decoding twice, or
    # reading %uXXXX or overlong UTF-8, would serve `..` (or globex) where Check saw acme.
    assert not is_normalized(path)
    assert await decide(gate, path) == (400, "malformed_request")


@pytest.mark.parametrize("path", ["/internal%20", "/internal%C2%A0", "/internal%E2%80%8B",
                                  "/%20internal", "/internal%EF%BB%BF/x", "/tenants/acme%20/x",
                                  "/tenants/acme/%E3%80%80"],
                         ids=["space", "nbsp", "zero-width-space", "leading-space", "bom",
                              "padded-tenant", "ideographic-space"])
async def test_an_escaped_space_or_invisible_character_ending_a_segment_is_refused(
        gate: LocalCheck, path: str) -> None:
    # A backend that trims path segments serves /internal%20 as /internal, past the deny rule.
    assert await decide(gate, path, roles=["admin"]) == (400, "malformed_request")


@pytest.mark.parametrize("path", ["/tenants/acme/100%25", "/tenants/acme/%25done",
                                  "/tenants/acme/50%25%20off", "/tenants/acme/%E2%82%AC",
                                  "/tenants/acme/%F0%9F%98%80", "/tenants/acme/%F4%8F%BF%BF",
                                  "/tenants/acme/%C3%A9%20%C3%A9"])
async def test_a_literal_percent_and_utf8_escapes_still_pass(gate: LocalCheck,
                                                             path: str) -> None:
    assert await decide(gate, path) == (200, "ok")


@pytest.mark.parametrize("path", ["/", "/notes", "/notes/1.json", "/a..b/c", "/.well-known/x",
                                  "/notes/%40", "/notes/%20", "/notes/%C3%A9", "/notes/%25",
                                  "/notes/%3A", "/notes/%60", "/notes/%7B", "/notes/%5B"])
def test_ordinary_paths_are_normalized(path: str) -> None:
    assert is_normalized(path)


@pytest.mark.parametrize("path, expected", [
    ("/tenants/acme/jobs:cancel", (403, "route_denied")),
    ("/tenants/acme/jobs%3Acancel", (400, "malformed_request")),
    ("/tenants/acme/jobs%3acancel", (400, "malformed_request")),
    ("/tenants/acme/other%3Ax", (400, "malformed_request")),  # any escape of a spelled-out ":"
    ("/users/me@home", (403, "route_denied")),
    ("/users/me%40home", (400, "malformed_request")),
    ("/tenants/acme/a%2Cb", (200, "ok")),  # no rule spells out ",": nothing to dodge
    ("/tenants/acme/a%20b", (200, "ok")),
    ("/tenants/acme/drafts/[1]", (403, "route_denied")),
    ("/tenants/acme/drafts/%5B1%5D", (400, "malformed_request")),
    ("/tenants/acme/caf%C3%A9", (403, "route_denied")),  # written escaped, matched escaped
    ("/tenants/acme/caf%c3%a9", (403, "route_denied")),
], ids=["colon", "escaped-colon", "escaped-colon-lower", "other-escaped-colon", "at",
        "escaped-at", "escaped-comma", "escaped-space", "brackets", "escaped-brackets",
        "escaped-non-ascii", "escaped-non-ascii-lower"])
async def test_a_path_escaping_a_character_some_rule_spells_out_is_refused(
        tmp_path: Path, path: str, expected: tuple[int, str]) -> None:
    # Envoy leaves `%3A` as sent: a rule for `jobs:cancel` would not see `jobs%3Acancel`, which
    # a backend that decodes paths (most do) serves as `jobs:cancel`.
    routes = [{"path": "/tenants/{tenant}/jobs:cancel", "action": "deny"},
              {"path_prefix": "/users/me@home", "action": "deny"},
              {"path": "/tenants/{tenant}/drafts/[1]", "action": "deny"},
              {"path": "/tenants/{tenant}/caf%C3%A9", "action": "deny"},
              {"path": "/tenants/{tenant}/**"}]
    config = build_config(tmp_path, [IDP.config()], policy={"routes": routes})
    async with LocalCheck(config) as local:
        assert await decide(local, path) == expected


def test_escapes_of_what_a_quota_endpoint_spells_out_are_refused_too() -> None:
    # A tighter limit on `jobs:export` would not see `jobs%3Aexport` either.
    table = compile_routes(PolicyConfig.model_validate({"routes": ROUTES}),
                           ["/v1/{project}/jobs:export", "/v1/*/**"])
    memo: dict[tuple[str, str, str], RouteMatch] = {}
    assert find_route(table, memo, "GET", "/v1/p/jobs%3Aexport", "acme") is None
    assert find_route(table, memo, "GET", "/v1/p/jobs:export", "acme") == (None, None)
    plain = compile_routes(PolicyConfig.model_validate({"routes": ROUTES}))
    assert find_route(plain, {}, "GET", "/v1/p/jobs%3Aexport", "acme") == (None, None)


@pytest.mark.parametrize("where", ["plan", "tenant"])
async def test_a_check_refuses_escapes_of_what_an_enabled_quota_endpoint_spells_out(
        tmp_path: Path, where: str) -> None:
    endpoint = {"name": "export", "path": "/tenants/{t}/jobs:export", "limits": ["5/s"]}
    plan: dict[str, Any] = {"limits": ["100/s"]}
    overrides: dict[str, Any] = {}
    (plan if where == "plan" else overrides)["endpoints"] = [endpoint]
    quota = {"enabled": True, "plans": {"std": plan}}
    tenants = {"registry": {"acme": {"plan": "std", "overrides": overrides}}}
    config = build_config(tmp_path, [IDP.config()], quota=quota, tenants=tenants)
    async with LocalCheck(config) as local:
        assert await decide(local, "/tenants/acme/jobs%3Aexport") == (400, "malformed_request")
        assert await decide(local, "/tenants/acme/jobs:export") == (200, "ok")
    config = build_config(tmp_path, [IDP.config()], quota={**quota, "enabled": False},
                          tenants=tenants)
    async with LocalCheck(config) as local:  # a disabled quota's patterns change nothing
        assert await decide(local, "/tenants/acme/jobs%3Aexport") == (200, "ok")


async def test_escaped_reserved_characters_pass_when_no_rule_spells_them_out(
        gate: LocalCheck) -> None:
    assert await decide(gate, "/notes/a%3Ab%40c") == (200, "ok")


@pytest.mark.parametrize("path", ["/INTERNAL%C3%89/x", "/internal%C3%A9/x",
                                  "/%EF%BD%89nternal%C3%A9"])
async def test_escaped_non_ascii_letters_match_rules_whatever_their_case(
        tmp_path: Path, path: str) -> None:
    """A rule on `/internal%C3%A9` (`/internalé`) also covers `É`, and fullwidth `i` (U+FF49),
    which a backend folding Unicode case or compatibility forms serves as the same path."""
    config = build_config(tmp_path, [IDP.config()], policy={"routes": [
        {"path_prefix": "/internal%C3%A9", "action": "deny"}]})
    async with LocalCheck(config) as local:
        assert await decide(local, path) == (403, "route_denied")
        assert await decide(local, "/internal%C3%A8/x") == (200, "ok")  # è is another letter


@pytest.mark.parametrize("method", ["post", "Post", "pOST"])
async def test_a_method_not_in_upper_case_is_refused(gate: LocalCheck, method: str) -> None:
    """HTTP/2 passes `post` as sent: rules would read it as POST while a rate-limit descriptor
    for POST would not match it, and the backend might run it as POST."""
    assert await decide(gate, "/notes", method, scope="notes:write",
                        headers={"content-type": "application/json", "content-length": "2"}
                        ) == (400, "malformed_request")


@pytest.mark.parametrize("path", ["/admin;x=1", "/admin%3Bx=1", "/notes;jsessionid=1/x"])
async def test_path_parameters_cannot_dodge_a_prefix_rule(gate: LocalCheck, path: str) -> None:
    assert not is_normalized(path)
    assert await decide(gate, path) == (400, "malformed_request")


@pytest.mark.parametrize("path, expected", [
    ("/internal", (403, "route_denied")), ("/INTERNAL/", (403, "route_denied")),
    ("/internal/x", (403, "route_denied")), ("/internals", (200, "ok")),
], ids=["directory-itself", "directory-other-case", "below", "longer-name"])
async def test_a_prefix_written_with_a_trailing_slash_covers_its_directory(
        tmp_path: Path, path: str, expected: tuple[int, str]) -> None:
    # Segment-aware: `/internal/` is the segment `internal` and all below it. Read as a plain
    # string prefix, `/internal` itself slipped past the deny rule to the default allow.
    routes = [{"path_prefix": "/internal/", "action": "deny"}]
    config = build_config(tmp_path, [IDP.config()], policy={"routes": routes})
    async with LocalCheck(config) as local:
        assert await decide(local, path) == expected


async def test_head_is_governed_by_a_get_rule(tmp_path: Path) -> None:
    routes = [{"path_prefix": "/reports", "methods": ["GET"], "roles": ["auditor"]}]
    config = build_config(tmp_path, [IDP.config()], policy={"routes": routes})
    async with LocalCheck(config) as local:
        assert await decide(local, "/reports", "HEAD") == (403, "role_missing")
        assert await decide(local, "/reports", "HEAD", roles=["auditor"]) == (200, "ok")


async def test_body_of_unknown_length_is_refused_where_a_size_limit_applies(
        gate: LocalCheck) -> None:
    # No content-length (chunked, or HTTP/2 without one): the size cannot be checked.
    chunked = {"content-type": "application/json", "transfer-encoding": "chunked"}
    assert await decide(gate, "/notes", "POST", headers=chunked, scope="notes:write") == (
        411, "length_required")


async def test_bytes_received_before_the_check_do_not_stand_in_for_a_length(
        gate: LocalCheck) -> None:
    # Envoy's `size` counts the body bytes received so far (a partial buffer, a filter that
    # paused before ext_authz): a 20-byte head of a huge chunked upload is not its length.
    token = IDP.token(scope="notes:write")
    response, audit = await gate.check(check_request(
        "/notes", "POST", size=20, headers={"authorization": f"Bearer {token}",
                                            "content-type": "application/json"}))
    assert audit is not None and audit["reason"] == "length_required"
    assert response.denied_response.status.code == 411


@pytest.mark.parametrize("path, expected", [
    ("/tenants/acme/shared/acme", (200, "ok")),
    ("/tenants/globex/shared/acme", (404, "cross_tenant_path")),
    ("/tenants/acme/shared/globex", (404, "cross_tenant_path")),
], ids=["both-own", "first-other", "second-other"])
async def test_every_tenant_segment_must_be_the_callers(
        tmp_path: Path, path: str, expected: tuple[int, str]) -> None:
    # Only the last `{tenant}` was compared: /tenants/globex/shared/acme reached globex.
    routes = [{"path": "/tenants/{tenant}/shared/{tenant}"}]
    config = build_config(tmp_path, [IDP.config()], policy={"routes": routes})
    async with LocalCheck(config) as local:
        assert await decide(local, path) == expected


@pytest.mark.parametrize("method, path, expected", [
    ("GET", "/tenants/globex/x", (404, "cross_tenant_path")),
    ("PATCH", "/tenants/globex/x", (404, "cross_tenant_path")),
    ("DELETE", "/TENANTS/globex", (404, "cross_tenant_path")),
    ("PATCH", "/tenants/acme/x", (200, "ok")),  # own path: the default applies as before
    ("GET", "/tenants/acme/x", (403, "role_missing")),
], ids=["listed-method", "unlisted-method", "unlisted-method-other-case", "own-path",
        "own-path-listed-method"])
async def test_another_tenants_path_is_404_whatever_the_method(
        tmp_path: Path, method: str, path: str, expected: tuple[int, str]) -> None:
    # A rule listing only some methods was skipped for the others, and with it the binding:
    # PATCH /tenants/globex/x went on to the default allow instead of 404.
    routes = [{"path": "/tenants/{tenant}/**", "methods": ["GET", "POST"], "roles": ["reader"]}]
    config = build_config(tmp_path, [IDP.config()], policy={"routes": routes})
    async with LocalCheck(config) as local:
        assert await decide(local, path, method) == expected


@pytest.mark.parametrize("path, expected", [
    ("/tenants/globex/notes", (404, "cross_tenant_path")),
    ("/tenants/globex/notes/1", (404, "cross_tenant_path")),
    ("/tenants/globex", (404, "cross_tenant_path")),
    ("/tenants/globex/other/x", (404, "cross_tenant_path")),
    ("/tenants/acme/notes/1", (200, "ok")),  # own path: the default applies as before
    ("/tenants", (200, "ok")),
    ("/files/globex", (200, "ok")),
], ids=["rule's-own-shape", "deeper", "shallower", "other-branch", "own-deeper", "no-tenant",
        "elsewhere"])
async def test_another_tenants_path_is_404_whatever_follows_the_tenant_segment(
        tmp_path: Path, path: str, expected: tuple[int, str]) -> None:
    # Only paths of the rule's exact length were bound: /tenants/globex/notes/1 matched no
    # rule and went on to the default allow with the caller's own signed context.
    routes = [{"path": "/tenants/{tenant}/notes"}]
    config = build_config(tmp_path, [IDP.config()], policy={"routes": routes})
    async with LocalCheck(config) as local:
        assert await decide(local, path) == expected


async def test_a_route_remembered_for_one_tenant_is_not_reused_for_another(
        tmp_path: Path) -> None:
    # For a method the rule does not list, the owner's own path goes on to the next rule while
    # anyone else's is 404: the remembered route depends on who asks.
    routes = [{"path": "/tenants/{tenant}/**", "methods": ["GET"]}]
    config = build_config(tmp_path, [IDP.config()], policy={"routes": routes})
    async with LocalCheck(config) as local:
        assert await decide(local, "/tenants/acme/x", "PATCH", tenant="acme") == (200, "ok")
        assert await decide(local, "/tenants/acme/x", "PATCH", tenant="globex") == (
            404, "cross_tenant_path")


@pytest.mark.parametrize("method, headers, expected", [
    ("POST", {"transfer-encoding": "chunked"}, (415, "content_type_not_allowed")),
    ("POST", {}, (415, "content_type_not_allowed")),  # HTTP/2: a body needs no length header
    ("POST", {"content-type": "application/json", "transfer-encoding": "chunked"}, (200, "ok")),
    ("POST", {"content-length": "0"}, (200, "ok")),  # says it has no body
    ("GET", {}, (200, "ok")),
], ids=["chunked-untyped", "unknown-length-untyped", "chunked-json", "empty-body", "get"])
async def test_a_body_of_unknown_length_needs_an_allowed_content_type(
        tmp_path: Path, method: str, headers: dict[str, str], expected: tuple[int, str]) -> None:
    # Without a size limit on the route, nothing else would stop an untyped body of unknown size.
    routes = [{"path_prefix": "/uploads", "content_types": ["application/json"]}]
    config = build_config(tmp_path, [IDP.config()], policy={"routes": routes})
    async with LocalCheck(config) as local:
        assert await decide(local, "/uploads", method, headers=headers) == expected


async def test_remembered_routes_still_bind_each_callers_own_tenant(gate: LocalCheck) -> None:
    # One runtime remembers which route a path takes; the tenant binding stays per caller.
    for _ in range(2):
        assert await decide(gate, "/tenants/acme/notes", tenant="acme") == (200, "ok")
        assert await decide(gate, "/tenants/acme/notes", tenant="globex") == (
            404, "cross_tenant_path")
        assert await decide(gate, "/tenants/acme/notes", "DELETE", tenant="globex") == (
            404, "cross_tenant_path")
        assert await decide(gate, "/tenants/a//b", tenant="acme") == (400, "malformed_request")
        assert await decide(gate, "/nowhere", tenant="acme") == (403, "route_denied")


def test_route_memo_is_bounded_in_entries_and_path_length() -> None:
    routes = compile_routes(PolicyConfig.model_validate({"routes": ROUTES}))
    memo: dict[tuple[str, str, str], RouteMatch] = {}
    long_path = "/tenants/acme/" + "x" * MAX_MEMO_PATH_CHARS
    found = find_route(routes, memo, "GET", long_path, "acme")
    assert found is not None and found[0] is routes.routes[0] and found[1] == "acme"
    assert memo == {}  # answered, not kept
    for i in range(MAX_ROUTE_MEMOS + 5):
        find_route(routes, memo, "GET", f"/notes/{i}", "acme")
    assert 0 < len(memo) <= MAX_ROUTE_MEMOS
    assert find_route(routes, memo, "GET", "/internal/x", "acme") == (routes.routes[2], None)
