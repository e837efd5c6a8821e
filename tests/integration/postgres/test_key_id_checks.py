"""Key ids are checked before a key row is built: a constraint violation's DETAIL is the failing
row, padded key forms included, and PostgreSQL writes it to the server log."""

from __future__ import annotations

import psycopg
import pytest
from pgsupport import Database
from pydantic import ValidationError
from tenantgate.cli import main
from tenantgate.config.model import ContextKey
from tenantgate.context import key_id_problem
from tenantgate.db import keys, schema

SECRET = b"log-leak-probe-secret-material-ABCDEFGHIJ"
RULE = "must be 1 to 32 characters, each a letter A-Z or a-z, a digit, _ or -"
BAD_KEY_IDS = ["k2-rotated-2026-11-29-for-prod-cluster", "bad.id", "", "a b", "k\n", "kä"]


def _pad_prefixes(secret: bytes) -> list[str]:
    # The DETAIL cuts each value at 64 characters: `\x` and the first 31 bytes of a pad.
    block = secret.ljust(64, b"\0")
    return [bytes(b ^ pad for b in block)[:8].hex() for pad in (0x36, 0x5C)]


def _log(db: Database) -> str:
    return db.cluster.log_tail(50_000_000)  # the whole server log, shared by the session


def _assert_no_key_material(db: Database, since: int, logged_error: str) -> None:
    log = _log(db)[since:]
    for needle in [*_pad_prefixes(SECRET), SECRET.decode(), SECRET.hex()]:
        assert needle not in log
    assert f"ERROR:  {logged_error}" in log  # the right log, and the error did reach it


@pytest.mark.parametrize("key_id", [*BAD_KEY_IDS, None],
                         ids=["38_chars", "dot", "empty", "space", "newline", "non_ascii", "null"])
def test_add_key_with_a_bad_key_id_raises_before_the_row_and_logs_no_pad(
        fresh_db: Database, key_id: str | None) -> None:
    start = len(_log(fresh_db))
    with (psycopg.connect(fresh_db.dsn(), autocommit=True) as conn,
          pytest.raises(psycopg.Error) as raised):
        conn.execute("SELECT tenantgate.add_key(%s, %s, true)", [key_id, SECRET])
    _assert_no_key_material(fresh_db, start, f"tenantgate.add_key: a key id {RULE}")
    assert isinstance(raised.value, psycopg.errors.InvalidParameterValue)
    assert raised.value.diag.message_primary == f"tenantgate.add_key: a key id {RULE}"
    assert raised.value.diag.message_detail is None


def test_a_constraint_violation_inside_the_key_functions_carries_no_row(
        fresh_db: Database) -> None:
    # Should a row still break a constraint (here one added by hand), the error keeps its
    # SQLSTATE and message but loses the DETAIL that would print the pads.
    start = len(_log(fresh_db))
    with psycopg.connect(fresh_db.dsn(), autocommit=True) as conn:
        conn.execute("ALTER TABLE tenantgate.context_keys ADD CONSTRAINT no_probe"
                     " CHECK (key_id <> 'probe')")
        with pytest.raises(psycopg.errors.CheckViolation) as raised:
            keys.add_key(conn, "probe", SECRET)
        keys.add_key(conn, "probe2", SECRET, activate=False)
        conn.execute("ALTER TABLE tenantgate.context_keys ADD CONSTRAINT no_activation"
                     " CHECK (key_id <> 'probe2' OR state <> 'active')")
        with pytest.raises(psycopg.errors.CheckViolation) as activated:
            keys.activate_key(conn, "probe2")
    _assert_no_key_material(fresh_db, start, "tenantgate.activate_key: new row for relation")
    for error in (raised.value, activated.value):
        assert error.diag.message_detail is None
    assert raised.value.diag.message_primary == (
        'tenantgate.add_key: new row for relation "context_keys" violates check constraint'
        ' "no_probe"')


def test_cli_add_key_refuses_a_bad_key_id_before_connecting(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CTX_KEY", SECRET.decode())
    # Port 1: a connection attempt would answer with a connection error instead.
    for key_id in BAD_KEY_IDS:
        code = main(["db", "add-key", key_id, "--secret-env", "CTX_KEY",
                     "--dsn", "host=127.0.0.1 port=1 connect_timeout=2"])
        out, err = capsys.readouterr()
        assert (code, out, err) == (2, "", f"error: KEY_ID: {RULE}\n"), key_id


def test_sql_cli_config_and_table_agree_on_key_ids(
        fresh_db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CTX_KEY", SECRET.decode())
    candidates = [*BAD_KEY_IDS, "a", "Z" * 32, "Z" * 33, "k-1_X", "a/b", "a'b", "-", "_"]
    with psycopg.connect(fresh_db.dsn(), autocommit=True) as conn:
        for key_id in candidates:
            in_sql = conn.execute("SELECT tenantgate._valid_key_id(%s)", [key_id]).fetchone()[0]
            assert in_sql is (key_id_problem(key_id) is None), key_id
            assert in_sql is _config_accepts(key_id), key_id
            assert in_sql is _table_accepts(conn, key_id), key_id


def _config_accepts(key_id: str) -> bool:
    try:
        ContextKey.model_validate({"id": key_id, "secret": {"fromEnv": "CTX_KEY"}})
    except ValidationError:
        return False
    return True


def _table_accepts(conn: psycopg.Connection, key_id: str) -> bool:
    # A retired row holds no key material, so this probe of the CHECK leaks nothing.
    try:
        with conn.transaction(force_rollback=True):
            conn.execute("INSERT INTO tenantgate.context_keys"
                         " (key_id, state, fingerprint, header_b64) VALUES (%s, 'retired', '', '')",
                         [key_id])
    except psycopg.errors.CheckViolation:
        return False
    return True


def test_an_installed_version_4_upgrades_to_the_checked_key_functions(
        fresh_db: Database, capsys: pytest.CaptureFixture[str]) -> None:
    with psycopg.connect(fresh_db.cluster.dsn(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE before_key_id_checks")
    dsn = fresh_db.cluster.dsn(dbname="before_key_id_checks")
    start = len(_log(fresh_db))
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            for migration in schema.migrations():
                if migration.version <= 4:  # what the previous release installed
                    conn.execute(migration.sql)
        assert main(["db", "install", "--dsn", dsn]) == 0
        assert capsys.readouterr().out == (
            f"tenantgate SQL at schema version {schema.latest_version()} (was 4)\n")
        with psycopg.connect(dsn, autocommit=True) as conn:
            with pytest.raises(psycopg.errors.InvalidParameterValue):
                keys.add_key(conn, "bad.id", SECRET)
            assert keys.add_key(conn, "good", SECRET) == "added"
            granted = conn.execute(
                "SELECT has_function_privilege('tenantgate_admin',"
                " 'tenantgate.add_key(text, bytea, boolean)', 'EXECUTE'),"
                " has_function_privilege('public', 'tenantgate._valid_key_id(text)', 'EXECUTE')")
            assert granted.fetchone() == (True, False)
        _assert_no_key_material(fresh_db, start, f"tenantgate.add_key: a key id {RULE}")
    finally:
        with psycopg.connect(fresh_db.cluster.dsn(), autocommit=True) as conn:
            conn.execute("DROP DATABASE before_key_id_checks")
