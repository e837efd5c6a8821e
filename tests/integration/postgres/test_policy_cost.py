"""What the policies cost, as docs/postgres.md states it: how often a statement verifies the
context, and that a query on an isolated table gets no parallel workers."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from pgsupport import SCHEMA, Database
from tenantgate.backend.common import SET_CONTEXT_SQL

DOCS = Path(__file__).resolve().parents[3] / "docs" / "postgres.md"


@pytest.fixture
def counted(fresh_db: Database) -> Database:
    """pgsupport's invoices, with function calls counted for every session."""
    with psycopg.connect(fresh_db.dsn("table_owner"), autocommit=True) as conn:
        conn.execute(SCHEMA)
    with psycopg.connect(fresh_db.dsn(), autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{fresh_db.name}" SET track_functions = \'all\'')
    return fresh_db


def verifications(db: Database, statement: str) -> int:
    """The context verifications one statement of acme's runs."""
    def calls() -> int:
        with psycopg.connect(db.dsn(), autocommit=True) as conn:
            row = conn.execute("SELECT calls FROM pg_stat_user_functions"
                               " WHERE funcname = 'verify_signed_context'").fetchone()
        return int(row[0]) if row else 0

    before = calls()
    with db.connect() as conn:
        with conn.transaction():
            conn.execute(SET_CONTEXT_SQL, [db.ring.sign("acme", "alice", "r", 60)])
            conn.execute(statement)
        # Flushed before the server answers this statement: the count below is complete.
        conn.execute("SELECT pg_stat_force_next_flush()")
    return calls() - before


@pytest.mark.parametrize(("statement", "expected"), [
    ("SELECT count(*) FROM invoices", 1),
    ("DELETE FROM invoices WHERE id = 99", 1),
    ("UPDATE invoices SET amount = amount WHERE id = 1", 2),  # USING and WITH CHECK
    ("INSERT INTO invoices (id, tenant_id, customer, amount) VALUES (10, 'acme', 'c', 1)", 1),
    # The column default, current_tenant(), runs per row: no sub-select in a DEFAULT.
    ("INSERT INTO invoices (id, customer, amount)"
     " SELECT g, 'c', 1 FROM generate_series(20, 29) AS g", 11),
    ("INSERT INTO invoices (id, tenant_id, customer, amount) VALUES (1, 'acme', 'c', 1)"
     " ON CONFLICT (tenant_id, id) DO UPDATE SET amount = excluded.amount", 3),
    ("SELECT * FROM invoices i JOIN invoice_lines l"
     " ON l.tenant_id = i.tenant_id AND l.invoice_id = i.id", 2),
], ids=["select", "delete", "update", "insert_with_tenant", "insert_ten_by_default", "upsert",
        "join"])
def test_how_often_a_statement_verifies_the_context(counted: Database, statement: str,
                                                    expected: int) -> None:
    assert verifications(counted, statement) == expected


def test_a_query_on_an_isolated_table_runs_without_parallel_workers(counted: Database) -> None:
    # The context functions are PARALLEL UNSAFE: PostgreSQL 15 refuses the subtransaction of
    # verify's EXCEPTION block in a parallel query, so they cannot be marked otherwise there.
    db = counted
    with psycopg.connect(db.dsn("table_owner"), autocommit=True) as conn:
        conn.execute("CREATE TABLE plain AS SELECT * FROM invoices WITH NO DATA;"
                     " GRANT SELECT ON plain TO app")
    with db.connect() as conn, conn.transaction():
        conn.execute("SET LOCAL parallel_setup_cost = 0; SET LOCAL parallel_tuple_cost = 0;"
                     " SET LOCAL min_parallel_table_scan_size = 0;"
                     " SET LOCAL max_parallel_workers_per_gather = 2")
        unsafe = conn.execute("SELECT proparallel FROM pg_proc"
                              " WHERE oid = 'tenantgate.current_tenant()'::regprocedure")
        assert unsafe.fetchone() == ("u",)
        manual = conn.execute("EXPLAIN SELECT count(*) FROM plain"
                              " WHERE tenant_id = 'acme'").fetchall()
        assert any("Gather" in line for (line,) in manual)  # parallel plans are possible here
        conn.execute(SET_CONTEXT_SQL, [db.ring.sign("acme", "alice", "r", 60)])
        isolated = conn.execute("EXPLAIN SELECT count(*) FROM invoices").fetchall()
        assert not any("Gather" in line for (line,) in isolated)
    docs = " ".join(DOCS.read_text().split())
    assert "PARALLEL UNSAFE" in docs and "whatever the table size" not in docs
