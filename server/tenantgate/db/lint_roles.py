"""db lint's checks of the application roles: what lets one of them around RLS or to the keys."""

from __future__ import annotations

from typing import Any

from tenantgate.db.findings import Finding, Problem

# A role the app role may SET ROLE to lends it its privileges even where they are not inherited
# (a NOINHERIT app role, GRANT ... WITH INHERIT FALSE): SET ROLE helper; <use them>; RESET ROLE.
# So a privilege is asked of every role it is a member of, the app role first; a superuser among
# them is reported already, and holds every privilege.
_MEMBERS = ("WHERE pg_has_role(%(role)s, m.oid, 'MEMBER') AND NOT m.rolsuper"
            " ORDER BY m.rolname <> %(role)s, m.rolname")


def _via(role: str, member: str) -> str:
    return "" if member == role else f" through membership in {member}"


def _extra_privileges(conn: Any, role: str, table_oid: int) -> list[tuple[str, str]]:
    """Table rights beyond SELECT/INSERT/UPDATE/DELETE that an application role must not have,
    as (rights, through which role) pairs; those the app role holds itself come once, first."""
    rights = ("TRUNCATE", "TRIGGER", "REFERENCES")
    # REFERENCES may be granted on one column (GRANT REFERENCES (id)), which is enough for a
    # probing foreign key; TRUNCATE and TRIGGER exist only on whole tables.
    held = conn.execute("SELECT m.rolname, has_table_privilege(m.oid, %(table)s::oid, 'TRUNCATE'),"
                        " has_table_privilege(m.oid, %(table)s::oid, 'TRIGGER'),"
                        " has_any_column_privilege(m.oid, %(table)s::oid, 'REFERENCES')"
                        " FROM pg_roles m " + _MEMBERS,
                        {"role": role, "table": table_oid}).fetchall()
    own: set[str] = set()  # the app role's own: a member role's grant of them adds nothing
    found = []
    for member, *has in held:
        if extra := [r for r, h in zip(rights, has, strict=True) if h and r not in own]:
            own |= set(extra) if member == role else set()
            found.append((", ".join(extra), _via(role, member)))
    return found


def role_findings(conn: Any, role: str, tables: list[tuple[int, str]]) -> list[Finding]:
    """The findings for one application role, given the tenant tables (and their parents)."""
    if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone():
        return [Finding(Problem.APP_ROLE_MISSING, role, "no such role")]
    found = []
    # Role attributes are not inherited, but a member may SET ROLE to the role that has them.
    powerful = conn.execute(
        "SELECT rolname, rolsuper, rolbypassrls, rolreplication FROM pg_roles"
        " WHERE (rolsuper OR rolbypassrls OR rolreplication)"
        " AND pg_has_role(%s, oid, 'MEMBER') ORDER BY rolname", [role]).fetchall()
    for name, superuser, bypass, replication in powerful:
        via = _via(role, name)
        if superuser:  # has all of the below: one finding says it
            found.append(Finding(Problem.APP_ROLE_BYPASSES_RLS, role, f"is a superuser{via}"))
            continue
        if bypass:
            found.append(Finding(Problem.APP_ROLE_BYPASSES_RLS, role, f"has BYPASSRLS{via}"))
        if replication:
            found.append(Finding(Problem.APP_ROLE_BYPASSES_RLS, role, f"has REPLICATION{via}: "
                                 "a logical replication slot (wal_level = logical) decodes every "
                                 "tenant's writes, and the context keys' pads, from the WAL; a "
                                 "base backup copies every table"))
    creators = conn.execute(
        "SELECT rolname FROM pg_roles WHERE rolcreaterole AND pg_has_role(%s, oid, 'MEMBER')"
        " ORDER BY rolname", [role]).fetchall()
    for (name,) in creators:
        via = _via(role, name)
        found.append(Finding(Problem.APP_ROLE_CREATES_ROLES, role, f"has CREATEROLE{via}: up to "
                             "PostgreSQL 15 it can grant itself tenantgate_owner (the keys) or "
                             "a table owner's role"))
    for oid, table in tables:
        owner = conn.execute("SELECT pg_has_role(%s, relowner, 'MEMBER'), relowner::regrole::text"
                             " FROM pg_class WHERE oid = %s", [role, oid]).fetchone()
        if owner[0]:
            found.append(Finding(Problem.APP_ROLE_OWNS_TABLE, role, f"owns {table} (as "
                                 f"{owner[1]}) and can switch its RLS off"))
            continue
        found += [Finding(Problem.APP_ROLE_EXTRA_PRIVILEGE, role, f"has {extra} on {table}{via}:"
                          " TRUNCATE ignores row level security, TRIGGER runs its code as"
                          " whoever writes next, REFERENCES probes other tenants' keys")
                  for extra, via in _extra_privileges(conn, role, oid)]
    # Column grants count (SELECT on the pads reads every key, INSERT adds a key of one's own),
    # and so does any key management function (retire_key locks every tenant out).
    keys = conn.execute(
        "SELECT pg_has_role(%s, 'tenantgate_owner', 'MEMBER')"
        " OR pg_has_role(%s, 'tenantgate_admin', 'MEMBER')"
        " OR has_any_column_privilege(%s, 'tenantgate.context_keys',"
        "                             'SELECT, INSERT, UPDATE, REFERENCES')"
        # TRIGGER too: a trigger of the app's on the key table runs as whoever changes the
        # keys, tenantgate_owner, and can copy every pad.
        " OR has_table_privilege(%s, 'tenantgate.context_keys', 'DELETE, TRUNCATE, TRIGGER')"
        " OR EXISTS (SELECT 1 FROM pg_proc p WHERE p.pronamespace = 'tenantgate'::regnamespace"
        "            AND p.proname IN ('add_key', 'activate_key', 'retire_key', 'list_keys')"
        "            AND has_function_privilege(%s, p.oid, 'EXECUTE'))",
        [role] * 5).fetchone()[0]
    if keys:
        found.append(Finding(Problem.APP_ROLE_READS_KEYS, role, "can read or manage the context "
                             "keys (member of tenantgate_owner/tenantgate_admin or granted)"))
    return found + _server_file_findings(conn, role) + _creation_findings(conn, role)


# No privilege check stops these: the key table's data file is on disk, pads in the clear.
_SERVER_FILE_ROLES = {
    "pg_read_server_files": "reads any file the server can, the key table's data file too",
    "pg_write_server_files": "writes any file the server can (its configuration, say)",
    "pg_execute_server_program": "runs programs as the server, which read the key table's "
                                 "data file",
}


def _server_file_findings(conn: Any, role: str) -> list[Finding]:
    # A superuser is reported already, and is a member of every role.
    held = conn.execute(
        "SELECT rolname FROM pg_roles WHERE rolname = ANY(%s) AND pg_has_role(%s, oid, 'MEMBER')"
        " AND NOT (SELECT rolsuper FROM pg_roles WHERE rolname = %s) ORDER BY rolname",
        [list(_SERVER_FILE_ROLES), role, role]).fetchall()
    return [Finding(Problem.APP_ROLE_READS_KEYS, role, f"is a member of {name}: it "
                    f"{_SERVER_FILE_ROLES[name]}, so it can take the context keys")
            for (name,) in held]


def _creation_findings(conn: Any, role: str) -> list[Finding]:
    # A table looked up without a schema is looked for in pg_temp first, whatever search_path
    # says: on a server session shared between clients (PgBouncer's transaction pooling, a pool
    # without a reset) one client's TEMP TABLE invoices takes the next transactions' reads and
    # writes, whichever tenant's, without row level security. An object it may create in a
    # schema, or in a schema of its own (CREATE on the database: "$user" comes first in the
    # default search_path), shadows or sits beside the tenant tables just as unprotected.
    if conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", [role]).fetchone()[0]:
        return []  # reported already; no REVOKE binds it
    held = conn.execute(
        "SELECT p.kind, p.object, m.rolname, quote_ident(m.rolname) FROM pg_roles m, LATERAL ("
        "  SELECT 'temporary', quote_ident(current_database())"
        "  WHERE has_database_privilege(m.oid, current_database(), 'TEMPORARY')"
        "  UNION ALL SELECT 'create', quote_ident(current_database())"
        "  WHERE has_database_privilege(m.oid, current_database(), 'CREATE')"
        "  UNION ALL SELECT 'schema', quote_ident(nspname) FROM pg_namespace"
        "  WHERE nspname NOT IN ('pg_catalog', 'information_schema')"
        "  AND has_schema_privilege(m.oid, oid, 'CREATE')) AS p(kind, object) "
        + _MEMBERS, {"role": role})
    own: set[tuple[str, str]] = set()  # the app role's own: a member's grant adds nothing
    found = []
    for kind, name, member, ident in held.fetchall():
        if (kind, name) not in own:
            own |= {(kind, name)} if member == role else set()
            what, why = _CREATION_RISKS[kind]
            found.append(Finding(Problem.APP_ROLE_CREATES_OBJECTS, role, f"{what} {name}"
                                 f"{_via(role, member)}: {why} {name} FROM PUBLIC, {ident} (and"
                                 " from any role it is a member of; an owner keeps it)"))
    return found


_CREATION_RISKS = {
    "temporary": ("may create temporary tables in database", "Postgres looks in pg_temp first, "
                  "so on a pooled server session a temporary table named like a tenant table "
                  "takes later transactions' rows, every tenant's, without row level security; "
                  "REVOKE TEMPORARY ON DATABASE"),
    "create": ("may create schemas in database", "one named after the role comes first in the "
               "default search_path, and its tables shadow the tenant tables; REVOKE CREATE ON "
               "DATABASE"),
    "schema": ("may create objects in schema", "its tables have no row level security, and in a "
               "schema earlier in the search_path they shadow the tenant tables; REVOKE CREATE "
               "ON SCHEMA"),
}
