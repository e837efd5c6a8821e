"""Escaped compatibility characters that NFKC folds into path syntax (U+FF0F into `/`, U+2025
into `..`): the folded path would have other segments than the one the `{tenant}` binding reads."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tenantgate.config.model import PolicyConfig
from tenantgate.policy import compile_routes, find_route
from tenantgate.testing.check import DevIssuer, LocalCheck, build_config, check_request

IDP = DevIssuer(algorithm="ES256")
ROUTES: list[dict[str, Any]] = [{"path": "/tenants/{tenant}/**"},
                                {"path_prefix": "/internal", "action": "deny"}]


@pytest.fixture
async def gate(tmp_path: Path) -> AsyncIterator[LocalCheck]:
    # default_action allow: a path that slips past the `{tenant}` rule reaches the backend.
    config = build_config(tmp_path, [IDP.config()], policy={"routes": ROUTES})
    async with LocalCheck(config) as local:
        yield local


async def decide(gate: LocalCheck, path: str, tenant: str = "acme") -> tuple[int, str]:
    token = IDP.token(tenant=tenant)
    response, audit = await gate.check(check_request(
        path, "GET", headers={"authorization": f"Bearer {token}"}))
    assert audit is not None
    status = response.denied_response.status.code if response.HasField("denied_response") else 200
    return status, audit["reason"]


@pytest.mark.parametrize("path, tenant", [
    # Folded, `/tenants%EF%BC%8Fvictim...` reads `/tenants/victim/notes`: one raw segment, three
    # folded ones, so the `{tenant}` rule did not match and the default allow applied.
    ("/tenants%EF%BC%8Fvictim%EF%BC%8Fnotes", "acme"),
    # Folded, the rule matched, but `{tenant}` bound the raw second segment: `evil`.
    ("/tenants%EF%BC%8Fvictim%EF%BC%8Fnotes/evil", "evil"),
    ("/tenants/acme/%E2%80%A5/victim", "acme"),  # U+2025 folds to `..`
    ("/tenants/acme/%EF%BC%8E", "acme"),  # U+FF0E folds to `.`
    ("/tenants/acme/%E2%80%A4", "acme"),  # U+2024 folds to `.`
    ("/tenants/acme/a%EF%BC%BCb", "acme"),  # U+FF3C folds to `\`
    ("/tenants/acme/a%EF%B9%A8b", "acme"),  # U+FE68 folds to `\`
    ("/tenants/acme/a%EF%BC%9Fb", "acme"),  # U+FF1F folds to `?`
    ("/tenants/acme/a%EF%BC%83b", "acme"),  # U+FF03 folds to `#`
    ("/tenants/acme/a%EF%BC%9Bb", "acme"),  # U+FF1B folds to `;`
    ("/tenants/acme/a%EF%BC%8541", "acme"),  # U+FF05 folds to `%`
    ("/internal%EF%BC%8Fx", "acme"),
], ids=["fullwidth-solidus-no-match", "fullwidth-solidus-binds-later-segment", "two-dot-leader",
        "fullwidth-full-stop", "one-dot-leader", "fullwidth-backslash", "small-backslash",
        "fullwidth-question-mark", "fullwidth-number-sign", "fullwidth-semicolon",
        "fullwidth-percent", "fullwidth-solidus-under-deny-prefix"])
async def test_a_segment_folding_into_path_syntax_is_refused(
        gate: LocalCheck, path: str, tenant: str) -> None:
    assert await decide(gate, path, tenant) == (400, "malformed_request")


def test_find_route_refuses_a_segment_folding_into_a_separator() -> None:
    table = compile_routes(PolicyConfig.model_validate({"routes": ROUTES}))
    assert find_route(table, {}, "GET", "/tenants%EF%BC%8Fvictim%EF%BC%8Fnotes", "acme") is None


@pytest.mark.parametrize("path, tenant, expected", [
    ("/tenants/acme/%EF%BD%8Eotes", "acme", (200, "ok")),  # fullwidth `n`: still a letter
    ("/tenants/globex/%EF%BD%8Eotes", "acme", (404, "cross_tenant_path")),
    ("/%EF%BD%94enants/globex/x", "acme", (404, "cross_tenant_path")),  # fullwidth `t`
    ("/%EF%BD%89nternal/x", "acme", (403, "route_denied")),  # fullwidth `i`
    # Escaped as themselves, not made by folding: a `%` or `?` in a name, as before.
    ("/tenants/acme/100%25", "acme", (200, "ok")),
    ("/tenants/acme/what%3F", "acme", (200, "ok")),
], ids=["fullwidth-letter-own", "fullwidth-letter-other", "fullwidth-letter-in-literal",
        "fullwidth-letter-under-deny", "escaped-percent", "escaped-question-mark"])
async def test_fullwidth_letters_and_escaped_syntax_behave_as_before(
        gate: LocalCheck, path: str, tenant: str, expected: tuple[int, str]) -> None:
    assert await decide(gate, path, tenant) == expected
