"""The versioned SQL shipped in tenantgate/sql/ and its idempotent installation."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

_FILE = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
# One installer at a time: two concurrent installs would race on CREATE ROLE / CREATE SCHEMA.
_INSTALL_LOCK = 0x7465_6E61_6E74  # "tenant"


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """Every shipped SQL file, in version order."""
    found = []
    for entry in resources.files("tenantgate.sql").iterdir():
        if match := _FILE.match(entry.name):
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text("utf-8")))
    return sorted(found, key=lambda m: m.version)


def latest_version() -> int:
    return migrations()[-1].version


def print_sql(from_version: int = 0) -> str:
    """The SQL after `from_version`, one file after another, for other migration tools."""
    chunks = [f"-- ==== tenantgate/sql/{m.name} (schema version {m.version}) ====\n{m.sql}"
              for m in migrations() if m.version > from_version]
    return "\n".join(chunks)


class InstallRefused(Exception):
    """The database holds something an install must not adopt; nothing was changed."""


class ForeignSchema(InstallRefused):
    """Schema `tenantgate`, or something in it, belongs to a role other than tenantgate_owner."""


class UnsafeRole(InstallRefused):
    """tenantgate_owner or tenantgate_admin is more than the NOLOGIN role the SQL makes."""


class NotOwnerMember(InstallRefused):
    """The upgrade runs as tenantgate_owner, which the role connected cannot SET ROLE to."""


# The SQL's objects all belong to tenantgate_owner. A role that could create the schema first
# (say, one owning the database) could otherwise hand the installer its own schema_version
# and functions, and install would see version 1 and change nothing.
_FOREIGN_OBJECTS = """
SELECT kind, name, owner FROM (
    SELECT 0 AS rank, 'schema' AS kind, nspname::text AS name, nspowner::regrole::text AS owner
      FROM pg_catalog.pg_namespace WHERE nspname = 'tenantgate'
    UNION ALL
    SELECT 1, 'relation', c.oid::regclass::text, c.relowner::regrole::text
      FROM pg_catalog.pg_class c WHERE c.relnamespace = to_regnamespace('tenantgate')
    UNION ALL
    SELECT 2, 'function', p.oid::regprocedure::text, p.proowner::regrole::text
      FROM pg_catalog.pg_proc p WHERE p.pronamespace = to_regnamespace('tenantgate')
) objects WHERE owner <> 'tenantgate_owner' ORDER BY rank, name
"""


def foreign_objects(conn: Any) -> list[tuple[str, str, str]]:
    """(kind, name, owner) of each object in schema tenantgate not owned by tenantgate_owner."""
    return [tuple(row) for row in conn.execute(_FOREIGN_OBJECTS).fetchall()]


# 003_installer.sql records the role that applied it. Before, no installer was recorded.
_HAS_INSTALLERS = """
SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute
                WHERE attrelid = pg_catalog.to_regclass('tenantgate.schema_version')
                  AND attname = 'installed_by' AND NOT attisdropped)
"""


def installers(conn: Any) -> list[str] | None:
    """The roles tenantgate.schema_version records as installers, None if it records none."""
    if not conn.execute(_HAS_INSTALLERS).fetchone()[0]:
        return None
    rows = conn.execute("SELECT DISTINCT installed_by::text FROM tenantgate.schema_version"
                        " WHERE installed_by IS NOT NULL ORDER BY 1").fetchall()
    return [name for (name,) in rows]


# 001_context.sql creates its two roles only when they are missing, so it would adopt roles
# made beforehand by anyone with CREATEROLE: a LOGIN tenantgate_owner with a known password
# reads every key, a LOGIN tenantgate_admin adds keys of its own. Members of the owner read the
# keys too; the installer alone may be one (the SQL grants it the role to hand it objects). The
# admin role's members are not checked: granting it to whoever manages keys is its purpose.
_UNSAFE_ROLES = """
SELECT r.rolname::text, concat_ws(', ',
       CASE WHEN r.rolsuper THEN 'is a superuser' END,
       CASE WHEN r.rolcanlogin THEN 'can log in' END,
       CASE WHEN r.rolbypassrls THEN 'has BYPASSRLS' END,
       CASE WHEN r.rolcreaterole THEN 'has CREATEROLE' END,
       -- DISTINCT: from PostgreSQL 16 on a member may hold one grant per grantor.
       (SELECT 'has members ' || string_agg(DISTINCT m.member::regrole::text, ', '
                                            ORDER BY m.member::regrole::text)
          FROM pg_catalog.pg_auth_members m
         WHERE m.roleid = r.oid AND r.rolname = 'tenantgate_owner'
           AND m.member NOT IN (SELECT oid FROM pg_catalog.pg_roles
                                 WHERE rolname = ANY(%s::pg_catalog.text[]))))
  FROM pg_catalog.pg_roles r
 WHERE r.rolname IN ('tenantgate_owner', 'tenantgate_admin')
 ORDER BY 1
"""


def unsafe_roles(conn: Any) -> list[tuple[str, str]]:
    """(role, what is wrong) for tenantgate_owner/tenantgate_admin beyond NOLOGIN and no member
    but the recorded installers."""
    # An install from before the record: the role connected stands in for its installer, as
    # it did then (the member running this would not see itself).
    exempt = installers(conn)
    if exempt is None:
        exempt = [conn.execute("SELECT current_user::text").fetchone()[0]]
    return [(role, problems) for role, problems in conn.execute(_UNSAFE_ROLES, [exempt])
            .fetchall() if problems]


# The roles are cluster-wide: tenantgate installed in another database uses the same ones.
_OTHER_DATABASES = """
SELECT DISTINCT d.datname::text FROM pg_catalog.pg_shdepend s
  JOIN pg_catalog.pg_database d ON d.oid = s.dbid
 WHERE s.refclassid = 'pg_catalog.pg_authid'::pg_catalog.regclass AND s.deptype = 'o'
   AND s.refobjid = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = 'tenantgate_owner')
   AND d.datname <> pg_catalog.current_database()
 ORDER BY 1
"""


def _other_databases(conn: Any) -> list[str]:
    """The other databases of the cluster in which tenantgate_owner owns objects."""
    return [name for (name,) in conn.execute(_OTHER_DATABASES).fetchall()]


def _unsafe_role_message(conn: Any, role: str, problems: str, before: int) -> str:
    message = (f"role {role} already exists and {problems}: tenantgate would adopt it and its "
               "key access; make it NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEROLE without "
               "members (or drop it) and install again")
    if "has members" not in problems:
        return message
    if before > 0 and installers(conn) is None:
        message += ("; if a member installed tenantgate here, run this install as that role "
                    "once: from schema version 3 on the installer is recorded and exempt")
    elif role == "tenantgate_owner" and (elsewhere := _other_databases(conn)):
        members = problems.split("has members ", 1)[1]
        databases = ("database " if len(elsewhere) == 1 else "databases ") + ", ".join(elsewhere)
        message += (f"; but tenantgate_owner owns tenantgate in {databases}: the tenantgate "
                    "roles are cluster-wide (one tenantgate_owner and one tenantgate_admin for "
                    "every database), and dropping a member would break upgrades there; rather "
                    f"install here as a member ({members}), with CREATE on this database")
    return message


# Every version after 1 runs as tenantgate_owner: SET ROLE needs SET on it from PostgreSQL 16 on
# (a creator's ADMIN alone is not enough), membership before.
_CAN_SET_OWNER = """
SELECT rolsuper OR pg_catalog.pg_has_role(current_user, 'tenantgate_owner',
           CASE WHEN pg_catalog.current_setting('server_version_num')::int >= 160000
                THEN 'SET' ELSE 'MEMBER' END)
  FROM pg_catalog.pg_roles WHERE rolname = current_user
"""


def _refuse_upgrade_without_owner(conn: Any, before: int) -> None:
    if before == 0 or before == latest_version():
        return  # version 1 grants the installer the role; with nothing to upgrade none runs
    if conn.execute(_CAN_SET_OWNER).fetchone()[0]:
        return
    user = conn.execute("SELECT current_user::text").fetchone()[0]
    recorded = installers(conn)
    installer = "the role that installed tenantgate here" + (
        f" ({', '.join(recorded)})" if recorded else "")
    raise NotOwnerMember(
        f"schema version {before} is installed here and the upgrade runs as tenantgate_owner, "
        f"which {user} cannot SET ROLE to: upgrade as {installer} or as a superuser")


# createrole_self_grant (PostgreSQL 16+) makes CREATE ROLE grant the creator the new role with
# these options. Version 1 needs the installer to inherit tenantgate_owner (it revokes on the
# owner's schema before SET ROLE) and to SET ROLE to it; its grant (default options: both) is
# skipped ('set': no INHERIT) or leaves an existing self-grant as it is ('inherit': no SET).
# Empty, CREATE ROLE grants only ADMIN and version 1 grants what it needs, as it was written for.
_SET_SELF_GRANT = """
SELECT pg_catalog.set_config('createrole_self_grant', %s, true)
 WHERE pg_catalog.current_setting('server_version_num')::int >= 160000
"""
_SELF_GRANT = "SELECT pg_catalog.current_setting('createrole_self_grant', true)"


def installed_version(conn: Any) -> int:
    row = conn.execute("SELECT to_regclass('tenantgate.schema_version') IS NOT NULL").fetchone()
    if not row[0]:
        return 0
    version = conn.execute("SELECT coalesce(max(version), 0) FROM tenantgate.schema_version")
    return int(version.fetchone()[0])


def install(conn: Any) -> tuple[int, int]:
    """Apply the missing versions in one transaction; returns (version before, version after)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", [_INSTALL_LOCK])
        if foreign := foreign_objects(conn):
            kind, name, owner = foreign[0]
            raise ForeignSchema(
                f"{kind} {name} is owned by {owner}, not tenantgate_owner: whoever owns it "
                "controls what tenantgate's SQL runs; drop it (or make it tenantgate_owner's) "
                "and install again")
        before = installed_version(conn)
        if unsafe := unsafe_roles(conn):
            raise UnsafeRole(_unsafe_role_message(conn, *unsafe[0], before))
        _refuse_upgrade_without_owner(conn, before)
        self_grant = conn.execute(_SELF_GRANT).fetchone()[0]
        conn.execute(_SET_SELF_GRANT, [""])
        for migration in migrations():
            if migration.version > before:
                conn.execute(migration.sql)
        # SET LOCAL outlives a savepoint: give a caller's own transaction its setting back.
        conn.execute(_SET_SELF_GRANT, [self_grant])
        return before, installed_version(conn)
