"""The shipped SQL is versioned contiguously and the lint reads policy text precisely."""

from __future__ import annotations

import re
from pathlib import Path

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
    # The subject is whatever the issuer wrote: a subject spelled "globex" read globex's rows.
    ("(tenant_id = ( SELECT tenantgate.current_subject() AS current_subject))",
     [Problem.WRONG_CONTEXT_CALL]),
    # A column's value is no verified tenant (and a sub-select on a column runs per row).
    ("(tenant_id = ( SELECT (tenantgate.verify_context(other_column)).tenant AS tenant))",
     [Problem.PER_ROW_CONTEXT_CALL, Problem.WRONG_CONTEXT_CALL]),
    # Someone else's function: no tenant check, and no talk of wrapping it.
    ("(tenant_id = ( SELECT my_tenantgate.current_tenant() AS current_tenant))",
     [Problem.PERMISSIVE_POLICY_WITHOUT_CONTEXT]),
    ("(tenant_id = my_tenantgate.current_tenant())", [Problem.PERMISSIVE_POLICY_WITHOUT_CONTEXT]),
], ids=["once_per_statement", "per_row", "second_call_per_row", "raw_setting", "open",
        "subject_as_tenant", "verify_context_of_a_column", "look_alike_schema",
        "look_alike_schema_per_row"])
def test_policy_expressions_are_classified(qual: str, expected: list[Problem]) -> None:
    assert [f.problem for f in _policy_findings("t.p", True, qual, None)] == expected


def test_a_with_check_on_the_subject_is_reported_though_using_checks_the_tenant() -> None:
    tenant = "(tenant_id = ( SELECT tenantgate.current_tenant() AS current_tenant))"
    subject = "(tenant_id = ( SELECT tenantgate.current_subject() AS current_subject))"
    assert [str(f) for f in _policy_findings("t.p", True, tenant, subject)] == [
        "wrong_context_call: t.p: checks with tenantgate.current_subject(), not"
        " tenantgate.current_tenant(): only current_tenant() is the verified tenant (a subject"
        " is whatever the token's issuer wrote, and may be spelled like any tenant)"]


def test_a_restrictive_policy_on_the_subject_alone_narrows_and_is_fine() -> None:
    owner = "(owner = ( SELECT tenantgate.current_subject() AS current_subject))"
    assert _policy_findings("t.owner_only", False, owner, None) == []


def test_every_lint_finding_is_explained_in_the_docs() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "postgres.md").read_text()
    assert [str(p) for p in Problem if f"`{p}`" not in docs] == []
