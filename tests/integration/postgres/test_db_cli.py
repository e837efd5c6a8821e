"""`tenantgate db ...` against a real cluster: install, print-sql, keys, lint exit codes."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from pgsupport import ACTIVE_SECRET, Database
from tenantgate.cli import main
from tenantgate.context import KeyRing
from tenantgate.db import schema
from tenantgate.db.lint import Problem, lint


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["db", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_install_is_idempotent_and_reports_the_version(
        fresh_db: Database, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "install", "--dsn", fresh_db.dsn())
    assert (code, out) == (0, f"tenantgate SQL at schema version {schema.latest_version()}"
                              " (already installed)\n")


def test_print_sql_is_the_shipped_sql_and_installs_on_an_empty_database(
        fresh_db: Database, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "print-sql")
    assert code == 0 and "CREATE OR REPLACE FUNCTION tenantgate.current_tenant()" in out
    with psycopg.connect(fresh_db.cluster.dsn(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE printed")
    with psycopg.connect(fresh_db.cluster.dsn(dbname="printed"), autocommit=True) as conn:
        conn.execute(out)  # what a migration tool would run
        assert schema.installed_version(conn) == schema.latest_version()


def test_a_version_1_install_upgrades_and_the_old_verifier_is_not_public(
        fresh_db: Database, capsys: pytest.CaptureFixture[str]) -> None:
    with psycopg.connect(fresh_db.cluster.dsn(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE upgraded")
    dsn = fresh_db.cluster.dsn(dbname="upgraded")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(schema.migrations()[0].sql)  # what an earlier release installed
        assert schema.installed_version(conn) == 1
    code, out, _ = run(capsys, "install", "--dsn", dsn)
    assert (code, out) == (0, f"tenantgate SQL at schema version {schema.latest_version()}"
                              " (was 1)\n")
    with psycopg.connect(dsn, autocommit=True) as conn:
        public = conn.execute(
            "SELECT p.proname, has_function_privilege('public', p.oid, 'EXECUTE')"
            " FROM pg_proc p WHERE p.pronamespace = 'tenantgate'::regnamespace"
            " AND p.proname LIKE 'verify%' ORDER BY 1").fetchall()
    assert public == [("verify_context", True), ("verify_signed_context", False)]
    with psycopg.connect(dsn, autocommit=True) as conn:
        # Version 3 records who upgraded, version 4 replaces isolate() (inheritance parents),
        # version 5 the key functions (key ids checked before the row), version 6 the verifier
        # (iat in the future refused).
        assert conn.execute("SELECT version, installed_by::text FROM tenantgate.schema_version"
                            " ORDER BY 1").fetchall() == [(1, None), (2, None), (3, "postgres"),
                                                          (4, None), (5, None), (6, None)]
        isolate = conn.execute("SELECT prosrc FROM pg_proc"
                               " WHERE oid = 'tenantgate.isolate'::regproc")
        assert "inherits from" in isolate.fetchone()[0]


def test_install_refuses_a_tenantgate_schema_someone_else_made_first_and_lint_flags_it(
        fresh_db: Database, capsys: pytest.CaptureFixture[str]) -> None:
    # A role that may create schemas (here: the database's owner) makes `tenantgate` first,
    # with a schema_version saying "installed" and a current_tenant() that trusts a plain
    # setting. Install would have seen version 1 and changed nothing.
    cluster = fresh_db.cluster
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE squatted OWNER app")
    try:
        with psycopg.connect(cluster.dsn(user="app", dbname="squatted"), autocommit=True) as conn:
            conn.execute("CREATE SCHEMA tenantgate;"
                         " CREATE TABLE tenantgate.schema_version (version int);"
                         " INSERT INTO tenantgate.schema_version VALUES (1);"
                         " CREATE FUNCTION tenantgate.current_tenant() RETURNS text"
                         " LANGUAGE sql AS $$ SELECT current_setting('x.tenant', true) $$")
        dsn = cluster.dsn(dbname="squatted")
        code, out, err = run(capsys, "install", "--dsn", dsn)
        assert (code, out) == (1, "")
        assert err == ("error: schema tenantgate is owned by app, not tenantgate_owner: whoever"
                       " owns it controls what tenantgate's SQL runs; drop it (or make it"
                       " tenantgate_owner's) and install again\n")
        with psycopg.connect(dsn, autocommit=True) as conn:
            findings = lint(conn)
        assert [(f.problem, f.subject) for f in findings] == [
            (Problem.FOREIGN_SCHEMA_OBJECT, "tenantgate"),
            (Problem.FOREIGN_SCHEMA_OBJECT, "tenantgate.current_tenant()"),
            (Problem.FOREIGN_SCHEMA_OBJECT, "tenantgate.schema_version"),
            (Problem.NO_TENANT_TABLES, "tenant_id"),
        ]
    finally:
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute("DROP DATABASE squatted")


def test_key_lifecycle_from_env_and_file_secrets(
        fresh_db: Database, capsys: pytest.CaptureFixture[str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    secret = b"cli-secret-0123456789-0123456789-abcdef"
    monkeypatch.setenv("NEW_KEY", secret.decode())
    (tmp_path / "key").write_bytes(secret + b"\n")
    dsn = fresh_db.dsn()
    assert run(capsys, "add-key", "--dsn", dsn, "k2", "--secret-env", "NEW_KEY",
               "--pending")[:2] == (0, "k2: added\n")
    token = KeyRing({"k2": secret}, "k2").sign("acme", "s", "r", 60)
    assert _verifies(fresh_db, token) is None  # pending: not accepted yet
    assert run(capsys, "activate-key", "--dsn", dsn, "k2")[:2] == (0, "k2: activated\n")
    assert _verifies(fresh_db, token) == "acme"
    assert run(capsys, "add-key", "--dsn", dsn, "k2", "--secret-file",
               str(tmp_path / "key"))[:2] == (0, "k2: unchanged\n")
    assert run(capsys, "retire-key", "--dsn", dsn, "k2")[:2] == (0, "k2: retired\n")
    assert _verifies(fresh_db, token) is None
    code, _, err = run(capsys, "add-key", "--dsn", dsn, "k2", "--secret-env", "NEW_KEY")
    assert (code, err) == (1, "error: tenantgate.add_key: key k2 was retired; key ids are "
                              "never reused\n")


def test_add_key_refuses_a_short_secret_and_a_changed_secret(
        fresh_db: Database, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHORT", "too-short")
    monkeypatch.setenv("OTHER", "another-secret-0123456789-0123456789")
    dsn = fresh_db.dsn()
    assert run(capsys, "add-key", "--dsn", dsn, "k3", "--secret-env", "SHORT")[::2] == (
        1, "error: the secret must be at least 32 bytes\n")
    assert run(capsys, "add-key", "--dsn", dsn, "active", "--secret-env", "OTHER")[::2] == (
        1, "error: tenantgate.add_key: key active exists with a different secret\n")
    assert run(capsys, "add-key", "--dsn", dsn, "k3", "--secret-env", "UNSET_VAR")[::2] == (
        1, "error: environment variable UNSET_VAR is not set\n")


def test_sync_keys_from_config_accepts_exactly_the_ring(
        fresh_db: Database, capsys: pytest.CaptureFixture[str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CTX_NEW", "new-ring-secret-0123456789-0123456789")
    monkeypatch.setenv("CTX_ACTIVE", ACTIVE_SECRET.decode())
    config = tmp_path / "tenantgate.yaml"
    config.write_text(_config_with_keys())
    code, out, err = run(capsys, "sync-keys", "--dsn", fresh_db.dsn(), "--config", str(config))
    assert code == 0, err
    assert out.splitlines() == ["active: unchanged", "new: added", "long: retired",
                               "pending: retired"]
    assert _verifies(fresh_db, fresh_db.long_key_ring.sign("acme", "s", "r", 60)) is None
    assert _verifies(fresh_db, fresh_db.ring.sign("acme", "s", "r", 60)) == "acme"


def test_unreachable_database_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "lint", "--dsn", "host=127.0.0.1 port=1 connect_timeout=2")
    assert code == 1 and out == "" and err.startswith("error: ") and err.count("\n") == 1


def _verifies(db: Database, token: str) -> str | None:
    with db.connect() as conn:
        return conn.execute("SELECT (tenantgate.verify_context(%s)).tenant", [token]).fetchone()[0]


def _config_with_keys() -> str:
    # The smallest config the loader accepts, with a two-key context ring.
    return """
issuers:
  - name: test
    issuer: https://issuer.test
    audiences: [api]
    jwks: {inline: {keys: []}}
    tenant_pattern: "^[a-z]+$"
context:
  active_key: new
  keys:
    - {id: active, secret: {fromEnv: CTX_ACTIVE}}
    - {id: new, secret: {fromEnv: CTX_NEW}}
"""


def test_add_key_with_a_secret_env_that_is_not_utf8_is_a_one_line_error(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    # `export KEY=$(head -c 40 /dev/urandom)` gives bytes Python holds as surrogates.
    monkeypatch.setenv("BINARY_KEY", "\udcff" * 40)
    code, _, err = run(capsys, "add-key", "k4", "--secret-env", "BINARY_KEY")
    assert (code, err) == (1, "error: environment variable BINARY_KEY is not valid UTF-8\n")
