"""RLS lint: find tables, policies, views and roles that would let one tenant see another's rows."""

from __future__ import annotations

import re
from typing import Any

from tenantgate.db.findings import Finding, Problem
from tenantgate.db.lint_roles import role_findings
from tenantgate.db.schema import foreign_objects, unsafe_roles

__all__ = ["Finding", "Problem", "lint"]


# Not after an identifier character: my_tenantgate.current_tenant() is someone else's function.
_CONTEXT_CALL = re.compile(
    r"(?<![\w$])tenantgate\.(current_tenant|current_subject|verify_context)\(")
# The tenant check itself: the subject, or verify_context() of some other value, is no tenant.
_TENANT_CALL = re.compile(r"(?<![\w$])tenantgate\.current_tenant\(")
# pg_get_expr writes `(SELECT f())` as `( SELECT tenantgate.current_tenant() AS current_tenant)`.
_ONCE_PER_STATEMENT = re.compile(r"\(\s*SELECT\s+$")
# Setting names are case-insensitive: current_setting('TenantGate.Context') reads the same one.
_RAW_SETTING = re.compile(r"current_setting\('tenantgate\.context'", re.IGNORECASE)

DEFAULT_TENANT_COLUMN = "tenant_id"  # tenantgate.isolate()'s default too

_TABLES = """
SELECT c.oid, c.oid::regclass::text, c.relrowsecurity, c.relforcerowsecurity,
       a.atttypid IN ('text'::regtype, 'varchar'::regtype), a.atttypid::regtype::text,
       coalesce(co.collisdeterministic, true), a.attcollation::regcollation::text
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = %s AND a.attnum > 0
                     AND NOT a.attisdropped
  LEFT JOIN pg_collation co ON co.oid = a.attcollation
 WHERE c.relkind IN ('r', 'p')
   AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'tenantgate')
   AND n.nspname NOT LIKE 'pg\\_%%'
 ORDER BY 2
"""
_POLICIES = """
SELECT p.polname, p.polpermissive, pg_get_expr(p.polqual, p.polrelid),
       pg_get_expr(p.polwithcheck, p.polrelid)
  FROM pg_policy p WHERE p.polrelid = %s ORDER BY p.polname
"""
_VIEWS = """
SELECT DISTINCT v.oid::regclass::text, v.relkind,
       coalesce(v.reloptions, '{}') && ARRAY['security_invoker=true', 'security_invoker=on',
                                             'security_invoker=1']
  FROM pg_depend d
  JOIN pg_rewrite r ON r.oid = d.objid
  JOIN pg_class v ON v.oid = r.ev_class
 WHERE d.classid = 'pg_rewrite'::regclass AND d.refobjid = %s AND v.oid <> %s
   AND v.relkind IN ('v', 'm')
"""
# The inheritance parents, at any depth, of tenant tables that have no tenant column. A query
# on a parent applies the parent's policies to its children's rows too, never theirs. (The
# parents of a partition have its columns: they are tenant tables, checked as such.)
_PARENTS = """
WITH RECURSIVE up(child, parent) AS (
    SELECT i.inhrelid, i.inhparent FROM pg_inherits i WHERE i.inhrelid = ANY(%s::oid[])
    UNION
    SELECT up.child, i.inhparent FROM up JOIN pg_inherits i ON i.inhrelid = up.parent
)
SELECT p.oid, p.oid::regclass::text, p.relrowsecurity, p.relforcerowsecurity,
       string_agg(DISTINCT up.child::regclass::text, ', ' ORDER BY up.child::regclass::text),
       (SELECT string_agg(quote_ident(polname), ', ' ORDER BY polname) FROM pg_policy
         WHERE polrelid = p.oid AND polpermissive)
  FROM up JOIN pg_class p ON p.oid = up.parent
 WHERE p.oid <> ALL(%s::oid[])
 GROUP BY p.oid, p.relrowsecurity, p.relforcerowsecurity
 ORDER BY 2
"""
# Foreign keys into a tenant table whose columns do not pair tenant column with tenant column.
# conparentid = 0: a key on a partitioned table is reported once, not once per partition.
_FOREIGN_KEYS = """
SELECT c.conrelid::regclass::text || '.' || quote_ident(c.conname), c.conrelid::regclass::text,
       c.confrelid::regclass::text,
       (SELECT string_agg(quote_ident(b.attname), ', ' ORDER BY k.n)
          FROM unnest(c.confkey) WITH ORDINALITY AS k(attnum, n)
          JOIN pg_attribute b ON b.attrelid = c.confrelid AND b.attnum = k.attnum)
  FROM pg_constraint c
 WHERE c.contype = 'f' AND c.conparentid = 0 AND c.confrelid = ANY(%s::oid[])
   AND NOT EXISTS (
       SELECT 1 FROM unnest(c.conkey, c.confkey) AS k(referencing, referenced)
         JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.referencing
         JOIN pg_attribute b ON b.attrelid = c.confrelid AND b.attnum = k.referenced
        WHERE a.attname = %s AND b.attname = %s)
 ORDER BY 1
"""


def lint(conn: Any, tenant_column: str = DEFAULT_TENANT_COLUMN,
         app_roles: tuple[str, ...] = ()) -> list[Finding]:
    """Every finding, sorted; an empty list means the database passes."""
    with conn.transaction():
        # Deparse with qualified names whatever the caller's search_path is.
        conn.execute("SET LOCAL search_path = pg_catalog, pg_temp")
        return _lint(conn, tenant_column, app_roles)


def _lint(conn: Any, tenant_column: str, app_roles: tuple[str, ...]) -> list[Finding]:
    if not conn.execute("SELECT to_regprocedure('tenantgate.current_tenant()')").fetchone()[0]:
        return [Finding(Problem.NOT_INSTALLED, "tenantgate",
                        "schema tenantgate is missing: run `tenantgate db install`")]
    findings = [Finding(Problem.FOREIGN_SCHEMA_OBJECT, name, f"{kind} owned by {owner}, not "
                        "tenantgate_owner: its owner decides what the context checks do")
                for kind, name, owner in foreign_objects(conn)]
    findings += [Finding(Problem.UNSAFE_TENANTGATE_ROLE, role, f"{problems}: whoever uses it "
                         "reads or manages the context keys; make it NOLOGIN NOSUPERUSER "
                         "NOBYPASSRLS NOCREATEROLE, tenantgate_owner with no member but the "
                         "installer")
                 for role, problems in unsafe_roles(conn)]
    tables = conn.execute(_TABLES, [tenant_column]).fetchall()
    if not tables:  # a misspelt column checked nothing: that must not read as a pass
        findings.append(Finding(Problem.NO_TENANT_TABLES, tenant_column, "no table has this "
                                "tenant column, so no table was checked: is the column name "
                                "right?"))
    for oid, name, enabled, forced, *column in tables:
        findings += _column_findings(name, tenant_column, *column)
        findings += _table_findings(conn, oid, name, tenant_column, enabled, forced)
    oids = [oid for oid, *_ in tables]
    findings += _foreign_key_findings(conn, tenant_column, oids)
    parents = conn.execute(_PARENTS, [oids, oids]).fetchall()
    findings += _parent_findings(tenant_column, parents)
    for role in app_roles:  # owning a parent turns its RLS off too
        findings += role_findings(conn, role, [(oid, name) for oid, name, *_ in tables + parents])
    return sorted(findings)


def _parent_findings(tenant_column: str, parents: list[Any]) -> list[Finding]:
    # Without the tenant column no policy can pick one tenant's rows: the parent must let none
    # through (RLS enabled and forced, and only restrictive policies or none).
    found = []
    for _, name, enabled, forced, children, permissive in parents:
        why = ["row level security is off"] if not enabled else (
            [] if forced else ["row level security is not forced"])
        why += [f"its permissive policies ({permissive}) let rows through"] if permissive else []
        if why:
            found.append(Finding(Problem.UNISOLATED_PARENT, name, f"has no {tenant_column} but "
                                 f"is a parent of {children}, and {', '.join(why)}: a query on "
                                 "it reads, updates and deletes their rows under its policies, "
                                 f"not theirs; add {tenant_column} to it and isolate it, or "
                                 "enable and force row level security on it with no permissive "
                                 "policy"))
    return found


def _column_findings(table: str, column: str, text_type: bool, type_name: str,
                     deterministic: bool, collation: str) -> list[Finding]:
    # What tenantgate.isolate() refuses, for policies made by hand: the policies compare with
    # the column's own equality, under which two tenant ids may be equal though they differ
    # (citext or a nondeterministic collation ignore case, character(n) trailing blanks).
    if not text_type:
        return [Finding(Problem.UNSAFE_TENANT_COLUMN, table, f"{column} is {type_name}: tenant "
                        "columns must be text or varchar, whose = compares tenant ids exactly")]
    if not deterministic:
        return [Finding(Problem.UNSAFE_TENANT_COLUMN, table, f"{column} has the nondeterministic "
                        f"collation {collation}: tenant ids differing only in case would share "
                        "rows; use a deterministic one")]
    return []


def _table_findings(conn: Any, oid: int, name: str, tenant_column: str, enabled: bool,
                    forced: bool) -> list[Finding]:
    if not enabled:
        column = "" if tenant_column == DEFAULT_TENANT_COLUMN else f", {_literal(tenant_column)}"
        return [Finding(Problem.RLS_DISABLED, name, "has a tenant column but row level security "
                        f"is off: run SELECT tenantgate.isolate({_literal(name)}{column})")]
    found = []
    if not forced:
        found.append(Finding(Problem.RLS_NOT_FORCED, name, "RLS is not forced, so the table "
                             "owner bypasses it: ALTER TABLE ... FORCE ROW LEVEL SECURITY"))
    policies = conn.execute(_POLICIES, [oid]).fetchall()
    if not any(_TENANT_CALL.search(f"{qual} {check}") for _, _, qual, check in policies):
        found.append(Finding(Problem.NO_CONTEXT_POLICY, name,
                             "no policy compares the tenant column with "
                             "(SELECT tenantgate.current_tenant())"))
    for policy, permissive, qual, check in policies:
        found += _policy_findings(f"{name}.{policy}", permissive, qual, check)
    for view, kind, invoker in conn.execute(_VIEWS, [oid, oid]).fetchall():
        if kind == "m":
            found.append(Finding(Problem.VIEW_BYPASSES_RLS, view, f"materialized view over "
                                 f"{name} holds every tenant's rows"))
        elif not invoker:
            found.append(Finding(Problem.VIEW_BYPASSES_RLS, view, f"view over {name} runs as "
                                 "its owner: ALTER VIEW ... SET (security_invoker = true) (PG15+)"))
    return found


def _literal(text: str) -> str:
    """`text` as a SQL string literal, quoted as Postgres' quote_literal() quotes it."""
    # A suggested statement is pasted as is: a table named x');DROP TABLE t;-- must stay one
    # literal. A backslash makes it an E'' string, which standard_conforming_strings = off
    # reads the same way.
    quoted = text.replace("'", "''")
    if "\\" in text:
        return "E'" + quoted.replace("\\", "\\\\") + "'"
    return f"'{quoted}'"


def _foreign_key_findings(conn: Any, tenant_column: str, oids: list[int]) -> list[Finding]:
    # Foreign key checks and cascades run without row level security: a key on the id alone
    # lets one tenant probe which ids other tenants use, attach rows to their rows (which then
    # block their deletes) or have a cascade delete its rows.
    rows = conn.execute(_FOREIGN_KEYS, [oids, tenant_column, tenant_column]).fetchall()
    return [Finding(Problem.FOREIGN_KEY_WITHOUT_TENANT, key, f"{referencing} references "
                    f"{referenced} without {tenant_column}: foreign key checks and cascades "
                    "ignore row level security, so one tenant can probe, block and cascade into "
                    f"another's rows; reference ({tenant_column}, {columns}), with a UNIQUE "
                    f"({tenant_column}, {columns}) on {referenced}")
            for key, referencing, referenced, columns in rows]


def _policy_findings(policy: str, permissive: bool, qual: str | None,
                     check: str | None) -> list[Finding]:
    found = []
    text = f"{qual or ''} {check or ''}"
    # Each clause on its own: permissive USING clauses are OR-ed together, and so are WITH
    # CHECK clauses, so one open clause opens that side (an open WITH CHECK moves rows to
    # another tenant, an open USING updates another tenant's rows). Restrictive policies only
    # narrow: one on the subject alone (owner = current_subject()) is fine.
    for expr in (qual, check) if permissive else ():
        if expr is None or _TENANT_CALL.search(expr):
            continue
        if other := _CONTEXT_CALL.search(expr):
            found.append(Finding(Problem.WRONG_CONTEXT_CALL, policy, f"checks with tenantgate."
                                 f"{other.group(1)}(), not tenantgate.current_tenant(): only "
                                 "current_tenant() is the verified tenant (a subject is whatever "
                                 "the token's issuer wrote, and may be spelled like any tenant)"))
        else:
            found.append(Finding(Problem.PERMISSIVE_POLICY_WITHOUT_CONTEXT, policy,
                                 "permissive policies are OR-ed together: one without the tenant "
                                 "check, tenantgate.current_tenant(), opens the table"))
    for expr in (qual, check):
        for match in _CONTEXT_CALL.finditer(expr or ""):
            if not _ONCE_PER_STATEMENT.search(expr[:match.start()]):  # type: ignore[index]
                found.append(Finding(Problem.PER_ROW_CONTEXT_CALL, policy,
                                     f"calls tenantgate.{match.group(1)}() once per row: wrap it "
                                     f"as (SELECT tenantgate.{match.group(1)}())"))
                break
    if _RAW_SETTING.search(text):
        found.append(Finding(Problem.UNSIGNED_SETTING_IN_POLICY, policy,
                             "reads the tenantgate.context setting directly, trusting an "
                             "unsigned value: use tenantgate.current_tenant()"))
    return sorted(set(found))
