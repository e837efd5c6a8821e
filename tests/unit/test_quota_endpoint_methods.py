"""Endpoint rule methods: one HTTP method each, refused at load otherwise; GET covers HEAD."""

from __future__ import annotations

import pytest
from tenantgate.config.load import parse_config
from tenantgate.errors import ConfigError
from tenantgate.quota.limiter import CompiledPlan, compile_plan

BASE = """
context:
  active_key: k1
  keys: [{id: k1, secret: {fromEnv: TG_QUOTA_TEST_SECRET}}]
quota:
  plans:
    p:
      endpoints:
        - {name: reports, methods: [METHODS], path: '/reports/**', limits: ['1/s']}
"""


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TG_QUOTA_TEST_SECRET", "x" * 40)


def plan(methods: str) -> CompiledPlan:
    config = parse_config(BASE.replace("METHODS", methods))
    return compile_plan("p", config.quota.plans["p"], "closed")


def counted(methods: str, method: str) -> bool:
    return bool(plan(methods).buckets("t", method, "/reports/x"))


@pytest.mark.parametrize(("methods", "where", "written"), [
    ("'*'", 0, "'*'"),  # route rules refuse it too: leave methods out for any method
    ("'GET,POST'", 0, "'GET,POST'"),
    ("GET, 'GET POST'", 1, "'GET POST'"),
    ("''", 0, "''"),
], ids=["star", "comma_list", "space_list", "empty"])
def test_a_method_that_would_never_match_is_refused_with_its_key_path(
        methods: str, where: int, written: str) -> None:
    # Before: loaded, then matched no request, so the endpoint's limit was never enforced.
    with pytest.raises(ConfigError) as err:
        plan(methods)
    assert err.value.issues == [
        f"quota.plans.p.endpoints[0].methods[{where}]: {written} is not one HTTP method "
        "(leave methods out for any method)"]


def test_methods_are_compared_upper_cased() -> None:
    assert counted("get, purge", "GET") and counted("get, purge", "PURGE")


@pytest.mark.parametrize(("methods", "method", "limited"), [
    ("GET", "HEAD", True),  # most frameworks run the GET handler for HEAD
    ("GET", "GET", True),
    ("POST", "HEAD", False),
    ("HEAD", "GET", False),  # HEAD does not stand for GET
    ("GET", "POST", False),
], ids=lambda v: str(v))
def test_head_counts_against_a_get_limit(methods: str, method: str, limited: bool) -> None:
    assert counted(methods, method) is limited


def test_head_and_get_share_the_get_limit() -> None:
    compiled = plan("GET")
    assert compiled.buckets("t", "HEAD", "/reports/x") == compiled.buckets("t", "GET", "/reports/x")


def endpoint_path(path: str) -> str:
    """BASE with the endpoint's path pattern replaced (its method: GET)."""
    return BASE.replace("METHODS", "GET").replace("'/reports/**'", f"'{path}'")


@pytest.mark.parametrize("path", ["/api%EF%BC%8Fadmin", "/files/%E2%80%A5/x",
                                  "/a%EF%BC%9Fb/**"],
                         ids=["fullwidth-solidus", "two-dot-leader", "fullwidth-question-mark"])
def test_an_endpoint_path_escaping_what_folds_into_path_syntax_is_refused(path: str) -> None:
    # As route rules are. Before: /api%EF%BC%8Fadmin loaded and counted plain /api/admin.
    with pytest.raises(ConfigError) as caught:
        parse_config(endpoint_path(path))
    assert caught.value.issues == [
        "quota.plans.p.endpoints[0].path: an escaped character here folds (NFKC) into path "
        "syntax (`/`, `.`, `..`, `\\`, `?`, `#`, `;` or `%`), or is a space or invisible "
        "character ending a segment: Check refuses such a path, and the rule would count other "
        "paths instead"]


@pytest.mark.parametrize("path", ["/caf%C3%A9/**", "/files/%25done", "/reports/{id}"],
                         ids=["escaped-letter", "escaped-percent", "placeholder"])
def test_endpoint_paths_that_fold_to_themselves_still_pass(path: str) -> None:
    config = parse_config(endpoint_path(path))
    assert compile_plan("p", config.quota.plans["p"], "closed").rules
