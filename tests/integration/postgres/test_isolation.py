"""Row-level security keeps tenants apart even when the query forgets its tenant filter."""

from __future__ import annotations

import time

import psycopg
import pytest
from pgsupport import Database, create_case_insensitive_collation
from tenantgate.backend.psycopg import tenant_transaction
from tenantgate.context import KeyRing


def rows(db: Database, context: str | None, query: str, params: list[object] | None = None,
         user: str = "app") -> list[tuple[object, ...]]:
    with db.connect(user) as conn, conn.transaction():
        if context is not None:
            conn.execute("SELECT set_config('tenantgate.context', %s, true)", [context])
        return conn.execute(query, params).fetchall()


def ctx(db: Database, tenant: str) -> str:
    return db.ring.sign(tenant, "alice", "req-1", 60)


def test_select_without_where_sees_only_own_rows(db: Database) -> None:
    assert rows(db, ctx(db, "acme"), "SELECT id FROM invoices ORDER BY id") == [(1,), (2,)]
    assert rows(db, ctx(db, "globex"), "SELECT id FROM invoices ORDER BY id") == [(3,)]


def test_another_tenants_row_by_id_is_invisible(db: Database) -> None:
    assert rows(db, ctx(db, "acme"), "SELECT id FROM invoices WHERE id = 3") == []


def test_join_does_not_reach_another_tenants_rows(db: Database) -> None:
    query = ("SELECT i.id, l.item FROM invoices i FULL JOIN invoice_lines l"
             " ON l.invoice_id = i.id ORDER BY 1, 2")
    assert rows(db, ctx(db, "acme"), query) == [(1, "a-item"), (2, None)]


def test_security_invoker_view_obeys_rls(db: Database) -> None:
    if db.version < 15:
        pytest.skip("security_invoker views need PostgreSQL 15+")
    with db.connect("table_owner") as conn:
        conn.execute("CREATE OR REPLACE VIEW invoice_totals WITH (security_invoker = true) AS"
                     " SELECT tenant_id, sum(amount) AS total FROM invoices GROUP BY tenant_id")
        conn.execute("GRANT SELECT ON invoice_totals TO app")
    assert rows(db, ctx(db, "globex"), "SELECT * FROM invoice_totals") == [("globex", 30)]


def test_insert_with_another_tenants_id_is_rejected(db: Database) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
        rows(db, ctx(db, "acme"), "INSERT INTO invoices (id, tenant_id, customer, amount)"
             " VALUES (100, 'globex', 'x', 1)")


def test_update_moving_a_row_to_another_tenant_is_rejected(db: Database) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
        rows(db, ctx(db, "acme"), "UPDATE invoices SET tenant_id = 'globex' WHERE id = 1")


def test_update_and_delete_of_another_tenants_rows_touch_nothing(db: Database) -> None:
    acme = ctx(db, "acme")
    assert rows(db, acme, "UPDATE invoices SET amount = 0 WHERE id = 3 RETURNING id") == []
    assert rows(db, acme, "DELETE FROM invoices WHERE tenant_id = 'globex' RETURNING id") == []
    assert rows(db, ctx(db, "globex"), "SELECT id, amount FROM invoices") == [(3, 30)]


@pytest.mark.parametrize("invoice", [3, 77], ids=["another-tenants", "nobodys"])
def test_a_line_cannot_point_at_another_tenants_invoice_nor_tell_it_exists(
        db: Database, invoice: int) -> None:
    """Foreign-key checks ignore RLS: with the key on (tenant_id, id), acme's line can only name
    acme's invoices, and globex's invoice 3 fails exactly as a missing one does."""
    with pytest.raises(psycopg.errors.ForeignKeyViolation) as raised:
        rows(db, ctx(db, "acme"), "INSERT INTO invoice_lines (id, invoice_id, item)"
             " VALUES (50, %s, 'x')", [invoice])
    assert raised.value.diag.message_detail == 'Key is not present in table "invoices".'


def test_insert_without_tenant_id_takes_the_context_tenant(db: Database) -> None:
    with db.connect() as conn, tenant_transaction(conn, ctx(db, "acme")):
        conn.execute("INSERT INTO invoices (id, customer, amount) VALUES (101, 'n', 5)")
        assert conn.execute("SELECT tenant_id FROM invoices WHERE id = 101").fetchone() == \
            ("acme",)
        conn.execute("DELETE FROM invoices WHERE id = 101")


def _contexts(db: Database) -> dict[str, str | None]:
    good = ctx(db, "acme")
    head, body, sig = good.split(".")
    return {
        "missing": None,
        "empty": "",
        "forged_signature": f"{head}.{body}.{'A' * 43}",
        "payload_swapped": f"{head}.{ctx(db, 'globex').split('.')[1]}.{sig}",
        "wrong_key": KeyRing({"active": b"y" * 40}, "active").sign("acme", "a", "r", 60),
        "retired_key": db.retired_ring.sign("acme", "a", "r", 60),
        "pending_key": db.pending_ring.sign("acme", "a", "r", 60),
        "expired": db.ring.sign("acme", "a", "r", 60, now=time.time() - 120),
        "truncated": good[:-5],
        "plain_tenant_value": "acme",
    }


_BAD_CONTEXTS = ["missing", "empty", "forged_signature", "payload_swapped", "wrong_key",
                 "retired_key", "pending_key", "expired", "truncated", "plain_tenant_value"]


@pytest.mark.parametrize("case", _BAD_CONTEXTS)
def test_bad_context_sees_zero_rows_and_cannot_write(db: Database, case: str) -> None:
    context = _contexts(db)[case]
    assert rows(db, context, "SELECT * FROM invoices") == []
    assert rows(db, context, "UPDATE invoices SET amount = 0 RETURNING id") == []
    # tenant_id defaults to NULL: the NOT NULL constraint or the policy refuses the row.
    with pytest.raises((psycopg.errors.NotNullViolation, psycopg.errors.InsufficientPrivilege)):
        rows(db, context, "INSERT INTO invoices (id, customer, amount) VALUES (102, 'x', 1)")


def test_context_set_with_plain_set_outside_the_helper_is_not_trusted(db: Database) -> None:
    with db.connect() as conn:
        conn.execute("SET tenantgate.context = 'acme'")
        assert conn.execute("SELECT count(*) FROM invoices").fetchone() == (0,)
        conn.execute("SELECT set_config('tenantgate.context', 'globex', false)")
        assert conn.execute("SELECT count(*) FROM invoices").fetchone() == (0,)


def test_pooled_connection_reused_after_a_tenant_transaction_carries_no_context(
        db: Database) -> None:
    with db.connect() as conn:
        with tenant_transaction(conn, ctx(db, "acme")):
            assert conn.execute("SELECT count(*) FROM invoices").fetchone() == (2,)
        # The next user of the same connection, with no context of its own:
        assert conn.execute("SELECT current_setting('tenantgate.context', true)").fetchone() \
            in [(None,), ("",)]
        assert conn.execute("SELECT count(*) FROM invoices").fetchone() == (0,)
        assert conn.execute("SELECT tenantgate.current_tenant()").fetchone() == (None,)


def test_session_level_set_would_leak_which_is_why_the_helper_never_uses_it(
        db: Database) -> None:
    # Documents the hazard the helper avoids: a session-level value outlives the transaction.
    with db.connect() as conn:
        conn.execute("SELECT set_config('tenantgate.context', %s, false)", [ctx(db, "acme")])
        assert conn.execute("SELECT count(*) FROM invoices").fetchone() == (2,)


def test_rolled_back_transaction_leaves_no_context(db: Database) -> None:
    with db.connect() as conn:
        with pytest.raises(ZeroDivisionError), tenant_transaction(conn, ctx(db, "acme")):
            raise ZeroDivisionError
        assert conn.execute("SELECT count(*) FROM invoices").fetchone() == (0,)


def test_app_role_cannot_read_keys_or_call_key_management(db: Database) -> None:
    with db.connect() as conn:
        for statement in ("SELECT * FROM tenantgate.context_keys",
                          "SELECT * FROM tenantgate.list_keys()",
                          "SELECT tenantgate.add_key('evil', convert_to(repeat('x', 40), 'UTF8'))",
                          "SELECT tenantgate.retire_key('active')",
                          "SELECT tenantgate._pad('\\x00'::bytea, 54)"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)


def test_app_role_cannot_disable_or_unforce_rls(db: Database) -> None:
    with db.connect() as conn:
        for statement in ("ALTER TABLE invoices DISABLE ROW LEVEL SECURITY",
                          "ALTER TABLE invoices NO FORCE ROW LEVEL SECURITY",
                          "DROP POLICY tenantgate_select ON invoices",
                          "SET row_security = off; SELECT * FROM invoices"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)


def test_table_owner_is_restricted_too_because_rls_is_forced(db: Database) -> None:
    assert rows(db, None, "SELECT * FROM invoices", user="table_owner") == []
    assert rows(db, ctx(db, "globex"), "SELECT id FROM invoices", user="table_owner") == [(3,)]


def test_policy_check_runs_once_per_statement_as_an_initplan(db: Database) -> None:
    plan = rows(db, ctx(db, "acme"), "EXPLAIN (ANALYZE, VERBOSE, COSTS OFF, TIMING OFF,"
                " SUMMARY OFF) SELECT * FROM invoices")
    lines = [str(r[0]) for r in plan]
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("InitPlan"))
    init_plan = "\n".join(lines[start:start + 3])
    assert "Output: tenantgate.current_tenant()" in init_plan
    assert "loops=1)" in init_plan  # evaluated once for the statement, not per row


def test_isolate_refuses_a_tenant_column_with_a_nondeterministic_collation(
        fresh_db: Database) -> None:
    # With a case-insensitive collation 'acme' = 'ACME': two tenants tenantgate keeps apart
    # would read each other's rows through the policy's equality.
    create_case_insensitive_collation(fresh_db)
    with psycopg.connect(fresh_db.dsn("table_owner"), autocommit=True) as conn:
        conn.execute("CREATE TABLE ci (id int, tenant_id text COLLATE tenant_ci)")
        with pytest.raises(psycopg.errors.RaiseException,
                           match=r"public\.ci\.tenant_id has the nondeterministic collation"):
            conn.execute("SELECT tenantgate.isolate('ci')")


@pytest.mark.parametrize("parent", [
    "CREATE TABLE base (id int, secret text)",
    "CREATE TABLE base (id int, secret text); ALTER TABLE base ENABLE ROW LEVEL SECURITY",
    "CREATE TABLE base (id int, secret text); ALTER TABLE base ENABLE ROW LEVEL SECURITY;"
    " ALTER TABLE base FORCE ROW LEVEL SECURITY; CREATE POLICY everyone ON base USING (true)",
    # Two levels up: the grandparent's policies apply through it just the same.
    "CREATE TABLE top (id int, secret text); CREATE TABLE base () INHERITS (top);"
    " ALTER TABLE base ENABLE ROW LEVEL SECURITY; ALTER TABLE base FORCE ROW LEVEL SECURITY",
], ids=["no_rls", "not_forced", "permissive_policy", "grandparent"])
def test_isolate_refuses_a_table_whose_parent_lets_its_rows_through(
        fresh_db: Database, parent: str) -> None:
    # Querying a parent applies the parent's policies to the children's rows, never theirs:
    # through a parent without RLS, acme's context read and updated globex's rows.
    open_parent = "public.top" if "top" in parent else "public.base"
    with psycopg.connect(fresh_db.dsn("table_owner"), autocommit=True) as conn:
        conn.execute(f"{parent}; CREATE TABLE child (tenant_id text NOT NULL) INHERITS (base)")
        with pytest.raises(psycopg.errors.RaiseException,
                           match=rf"tenantgate\.isolate: public\.child inherits from {open_parent},"
                                 r" which has no column tenant_id and lets rows through"):
            conn.execute("SELECT tenantgate.isolate('child')")


def test_isolate_accepts_a_child_of_a_parent_that_lets_no_row_through(fresh_db: Database) -> None:
    with psycopg.connect(fresh_db.dsn("table_owner"), autocommit=True) as conn:
        conn.execute("CREATE TABLE base (id int, secret text);"
                     " ALTER TABLE base ENABLE ROW LEVEL SECURITY;"
                     " ALTER TABLE base FORCE ROW LEVEL SECURITY;"
                     " CREATE POLICY narrow ON base AS RESTRICTIVE USING (id > 0);"
                     " CREATE TABLE child (tenant_id text NOT NULL) INHERITS (base);"
                     " INSERT INTO child VALUES (1, 'acme secret', 'acme'),"
                     "                          (2, 'globex secret', 'globex');"
                     " SELECT tenantgate.isolate('child');"
                     " GRANT SELECT ON base, child TO app")
    assert rows(fresh_db, ctx(fresh_db, "acme"), "SELECT secret FROM child") == [("acme secret",)]
    assert rows(fresh_db, ctx(fresh_db, "acme"), "SELECT secret FROM base") == []


def test_a_context_expires_inside_a_long_command_too(db: Database) -> None:
    """statement_timestamp() stays fixed for a whole top-level command: a DO block (which needs
    no privilege) looping over one context kept reading its tenant's rows after it expired."""
    loop = """
        DO $$
        DECLARE
            expires numeric := (tenantgate.verify_context(
                current_setting('tenantgate.context', true))).expires_at;
            before int;
            after int;
        BEGIN
            SELECT count(*) INTO before FROM invoices;
            WHILE extract(epoch FROM clock_timestamp()) <= expires LOOP
                PERFORM pg_sleep(0.1);
            END LOOP;
            SELECT count(*) INTO after FROM invoices;
            RAISE EXCEPTION 'rows before expiry: %, after: %', before, after;
        END
        $$"""
    with pytest.raises(psycopg.errors.RaiseException) as raised:
        rows(db, db.ring.sign("acme", "alice", "req-1", 2), loop)
    assert "rows before expiry: 2, after: 0" in str(raised.value)
