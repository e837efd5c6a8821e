"""The shipped SQL is versioned contiguously and the lint reads policy text precisely."""

from __future__ import annotations

import re

import pytest
from tenantgate.db.lint import Problem, _policy_findings
from tenantgate.db.schema import latest_version, migrations, print_sql


def test_migrations_are_numbered_one_to_latest_without_gaps() -> None:
    assert [m.version for m in migrations()] == list(range(1, latest_version() + 1))


def test_every_definer_function_pins_its_search_path() -> None:
    sql = print_sql()
    functions = re.findall(r"CREATE OR REPLACE FUNCTION (\S+?)\((.*?)\$\$", sql, flags=re.S)
    definers = [name for name, body in functions if "SECURITY DEFINER" in body]
    assert "tenantgate.current_tenant" in definers
    for name, body in functions:
        assert "SET search_path = pg_catalog, pg_temp" in body, name


def test_print_sql_from_latest_version_is_empty() -> None:
    assert print_sql(latest_version()) == ""


@pytest.mark.parametrize(("qual", "expected"), [
    ("(tenant_id = ( SELECT tenantgate.current_tenant() AS current_tenant))", []),
    ("(tenant_id = tenantgate.current_tenant())", [Problem.PER_ROW_CONTEXT_CALL]),
    ("((tenant_id = ( SELECT tenantgate.current_tenant() AS current_tenant)) OR "
     "(owner = tenantgate.current_subject()))", [Problem.PER_ROW_CONTEXT_CALL]),
    ("(tenant_id = current_setting('tenantgate.context'::text, true))",
     [Problem.PERMISSIVE_POLICY_WITHOUT_CONTEXT, Problem.UNSIGNED_SETTING_IN_POLICY]),
    ("true", [Problem.PERMISSIVE_POLICY_WITHOUT_CONTEXT]),
], ids=["once_per_statement", "per_row", "second_call_per_row", "raw_setting", "open"])
def test_policy_expressions_are_classified(qual: str, expected: list[Problem]) -> None:
    assert [f.problem for f in _policy_findings("t.p", True, qual, None)] == expected
