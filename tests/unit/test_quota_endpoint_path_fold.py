"""Endpoint path patterns refuse an escape that NFKC folds into path syntax, as route rules do:
the pattern would count another path than the one written."""

from __future__ import annotations

import pytest
from tenantgate.config.load import parse_config
from tenantgate.errors import ConfigError
from tenantgate.quota.limiter import compile_plan

BASE = """
context:
  active_key: k1
  keys: [{id: k1, secret: {fromEnv: TG_QUOTA_TEST_SECRET}}]
quota:
  plans:
    p:
      endpoints:
        - {name: e, path: 'PATH', limits: ['1/s']}
"""


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TG_QUOTA_TEST_SECRET", "x" * 40)


@pytest.mark.parametrize("path", ["/api%EF%BC%8Fadmin", "/files/%E2%80%A5/x",
                                  "/a%EF%BC%9Fb/**"],
                         ids=["fullwidth-solidus", "two-dot-leader", "fullwidth-question-mark"])
def test_an_endpoint_path_escaping_what_folds_into_path_syntax_is_refused(path: str) -> None:
    # Before: /api%EF%BC%8Fadmin loaded and counted plain /api/admin.
    with pytest.raises(ConfigError) as caught:
        parse_config(BASE.replace("PATH", path))
    assert caught.value.issues == [
        "quota.plans.p.endpoints[0].path: an escaped character here folds (NFKC) into path "
        "syntax (`/`, `.`, `..`, `\\`, `?`, `#`, `;` or `%`): Check refuses such a path, and the "
        "rule would count other paths instead"]


@pytest.mark.parametrize("path", ["/caf%C3%A9/**", "/files/%25done", "/reports/{id}"],
                         ids=["escaped-letter", "escaped-percent", "placeholder"])
def test_endpoint_paths_that_fold_to_themselves_still_pass(path: str) -> None:
    config = parse_config(BASE.replace("PATH", path))
    assert compile_plan("p", config.quota.plans["p"], "closed").rules
