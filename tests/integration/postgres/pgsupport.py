"""Shared by the Postgres integration tests: key secrets, the test schema, database setup."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
import pytest
from tenantgate.context import KeyRing
from tenantgate.db import keys, schema
from tenantgate.db.lint import Finding, Problem, lint
from tenantgate.testing.postgres import PostgresCluster, available_bin_dirs

_BIN_DIRS = available_bin_dirs()
_VERSIONS = sorted(_BIN_DIRS) or ["pg18"]

ACTIVE_SECRET = b"active-secret-for-tests-0123456789abcdef"
RETIRED_SECRET = b"retired-secret-for-tests-0123456789abcdef"
PENDING_SECRET = b"pending-secret-for-tests-0123456789abcdef"
LONG_SECRET = bytes(range(200)) * 1  # longer than the 64-byte HMAC block: hashed first

SCHEMA = """
CREATE TABLE invoices (
    id        bigint NOT NULL,
    tenant_id text NOT NULL DEFAULT tenantgate.current_tenant(),
    customer  text NOT NULL,
    amount    numeric NOT NULL,
    PRIMARY KEY (tenant_id, id)  -- as docs/postgres.md advises: keys led by the tenant
);
CREATE TABLE invoice_lines (
    id         bigint NOT NULL,
    tenant_id  text NOT NULL DEFAULT tenantgate.current_tenant(),
    invoice_id bigint NOT NULL,
    item       text NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, invoice_id) REFERENCES invoices (tenant_id, id)
);
INSERT INTO invoices VALUES (1, 'acme', 'a-customer', 10), (2, 'acme', 'a-other', 20),
                            (3, 'globex', 'g-customer', 30);
INSERT INTO invoice_lines VALUES (1, 'acme', 1, 'a-item'), (2, 'globex', 3, 'g-item');
-- Rows go in before isolation: FORCE makes the owner obey the policies too.
SELECT tenantgate.isolate('invoices');
SELECT tenantgate.isolate('invoice_lines');
GRANT SELECT, INSERT, UPDATE, DELETE ON invoices, invoice_lines TO app;
"""


@dataclass(frozen=True)
class Database:
    """One database with tenantgate installed. `ring` signs with the active key; `retired_ring`
    and `pending_ring` sign with keys Postgres must refuse."""

    cluster: PostgresCluster
    name: str
    ring: KeyRing
    long_key_ring: KeyRing
    retired_ring: KeyRing
    pending_ring: KeyRing

    @property
    def version(self) -> int:
        return self.cluster.major

    def dsn(self, user: str = "postgres") -> str:
        return self.cluster.dsn(user=user, dbname=self.name)

    def connect(self, user: str = "app") -> psycopg.Connection:
        return psycopg.connect(self.dsn(user), autocommit=True)


def create_database(cluster: PostgresCluster, name: str) -> Database:
    """A fresh database with tenantgate installed and the test key ring loaded."""
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" OWNER table_owner')
        # As docs/postgres.md advises: a temporary table of one client would take the next
        # tenants' rows on a shared server session (db lint reports app_role_creates_objects).
        conn.execute(f'REVOKE TEMPORARY ON DATABASE "{name}" FROM PUBLIC')
    with psycopg.connect(cluster.dsn(dbname=name), autocommit=True) as conn:
        schema.install(conn)
        keys.add_key(conn, "active", ACTIVE_SECRET)
        keys.add_key(conn, "long", LONG_SECRET)
        keys.add_key(conn, "retired", RETIRED_SECRET)
        keys.retire_key(conn, "retired")
        keys.add_key(conn, "pending", PENDING_SECRET, activate=False)
    return Database(cluster, name, KeyRing({"active": ACTIVE_SECRET}, "active"),
                    KeyRing({"long": LONG_SECRET}, "long"),
                    KeyRing({"retired": RETIRED_SECRET}, "retired"),
                    KeyRing({"pending": PENDING_SECRET}, "pending"))


def lint_without_tenant_tables(conn: psycopg.Connection,
                               app_roles: tuple[str, ...] = ()) -> list[Finding]:
    """db lint of a database with no tenant table: the findings besides the no_tenant_tables
    one it must report."""
    findings = lint(conn, app_roles=app_roles)
    assert [f.problem for f in findings].count(Problem.NO_TENANT_TABLES) == 1, findings
    return [f for f in findings if f.problem != Problem.NO_TENANT_TABLES]


def create_case_insensitive_collation(db: Database) -> None:
    """Collation tenant_ci (ICU, nondeterministic), or skip: not every build has ICU."""
    with psycopg.connect(db.dsn(), autocommit=True) as conn:
        try:
            conn.execute("CREATE COLLATION tenant_ci (provider = icu,"
                         " locale = 'und-u-ks-level2', deterministic = false)")
        except psycopg.errors.FeatureNotSupported:
            pytest.skip("this PostgreSQL build has no ICU, so no nondeterministic collation")
