"""`tenantgate db ...` help texts: every sub-command says what it does, every option its default."""

from __future__ import annotations

import pytest
from tenantgate.cli import main


def help_text(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(["db", *argv, "--help"])
    assert exit_.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps to the terminal width


def test_print_sql_help_describes_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert "print the versioned SQL for your own migration tool" in help_text(capsys, "print-sql")


def test_lint_help_explains_the_tenant_column_and_its_default(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert ("--tenant-column NAME the column holding the tenant id: every table with it is "
            "checked, and none having it is a finding (default: tenant_id)") \
        in help_text(capsys, "lint")


def test_lint_help_lists_the_temporary_and_create_checks_of_an_app_role(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert "TRUNCATE/TRIGGER/REFERENCES, and TEMPORARY or CREATE (temporary tables and " \
           "schemas' objects shadow the tenant tables)" in help_text(capsys, "lint")
