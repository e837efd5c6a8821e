"""`tenantgate demo` reports a database set-up the database refuses as its `[failed]` line, and
lets a bug in the set-up surface with its traceback."""

from __future__ import annotations

import psycopg
import pytest
from tenantgate.cli.demo import _Failed, _start_postgres, _Started
from tenantgate.db.schema import ForeignSchema
from tenantgate.testing import envoy, postgres


class StartedCluster:
    """Stands in for PostgresCluster: what is under test is what the demo makes of the
    set-up's errors, not Postgres."""

    major, port = 17, 5432

    def start(self) -> StartedCluster:
        return self

    def stop(self) -> None:
        pass

    def dsn(self) -> str:
        return "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


def set_up_raising(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    def prepare_notes_database(owner_dsn: str, context_keys: dict[str, bytes]) -> str:
        raise error

    monkeypatch.setattr(postgres, "PostgresCluster", StartedCluster)
    monkeypatch.setattr(envoy, "prepare_notes_database", prepare_notes_database)


@pytest.mark.parametrize("error", [
    psycopg.OperationalError("connection refused"),
    psycopg.errors.CheckViolation("key_id breaks the rule"),
    OSError(2, "No such file or directory"),
    ForeignSchema("schema tenantgate is owned by mallory"),
], ids=["connection", "sql-refused", "sql-file-unreadable", "install-refused"])
def test_an_error_the_database_set_up_can_raise_is_a_failed_step(
        monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    set_up_raising(monkeypatch, error)
    with _Started() as started, pytest.raises(_Failed) as failed:
        _start_postgres(started, {"k1": b"k" * 32})
    assert str(failed.value) == f"postgres: installing the tenantgate SQL failed: {error}"


@pytest.mark.parametrize("bug", [TypeError("unhashable type: 'list'"),
                                 AttributeError("'NoneType' object has no attribute 'execute'"),
                                 KeyError("k1")],
                         ids=["type-error", "attribute-error", "key-error"])
def test_a_bug_in_the_set_up_is_not_reported_as_a_set_up_failure(
        monkeypatch: pytest.MonkeyPatch, bug: Exception) -> None:
    set_up_raising(monkeypatch, bug)
    with _Started() as started, pytest.raises(type(bug)) as raised:
        _start_postgres(started, {"k1": b"k" * 32})
    assert raised.value is bug  # the original, traceback and all, not a [failed] line
