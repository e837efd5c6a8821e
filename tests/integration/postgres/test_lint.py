"""`tenantgate db lint` finds each way a schema could leak rows across tenants."""

from __future__ import annotations

import psycopg
import pytest
from pgsupport import Database, create_case_insensitive_collation, lint_without_tenant_tables
from tenantgate.backend.common import SET_CONTEXT_SQL
from tenantgate.cli import main
from tenantgate.db.lint import Finding, Problem, lint

BROKEN_SCHEMA = """
CREATE TABLE no_rls (id int, tenant_id text);
CREATE TABLE not_forced (id int, tenant_id text);
ALTER TABLE not_forced ENABLE ROW LEVEL SECURITY;
CREATE POLICY p ON not_forced USING (tenant_id = (SELECT tenantgate.current_tenant()));
CREATE TABLE per_row (id int, tenant_id text);
ALTER TABLE per_row ENABLE ROW LEVEL SECURITY;
ALTER TABLE per_row FORCE ROW LEVEL SECURITY;
CREATE POLICY p ON per_row USING (tenant_id = tenantgate.current_tenant());
CREATE TABLE raw_setting (id int, tenant_id text);
ALTER TABLE raw_setting ENABLE ROW LEVEL SECURITY;
ALTER TABLE raw_setting FORCE ROW LEVEL SECURITY;
CREATE POLICY p ON raw_setting USING (tenant_id = current_setting('tenantgate.context', true));
CREATE TABLE opened (id int, tenant_id text);
SELECT tenantgate.isolate('opened');
CREATE POLICY admin_view ON opened FOR SELECT USING (true);
CREATE TABLE good (id int, tenant_id text);
SELECT tenantgate.isolate('good');
CREATE VIEW good_view AS SELECT * FROM good;
CREATE TABLE unrelated (id int);
"""


@pytest.fixture
def broken(fresh_db: Database) -> Database:
    with psycopg.connect(fresh_db.dsn("table_owner"), autocommit=True) as conn:
        conn.execute(BROKEN_SCHEMA)
    with psycopg.connect(fresh_db.dsn(), autocommit=True) as conn:
        conn.execute("CREATE ROLE app_bypass LOGIN BYPASSRLS")
        conn.execute("CREATE ROLE app_member LOGIN")
        conn.execute("GRANT tenantgate_admin TO app_member")
        conn.execute("CREATE ROLE app_creator LOGIN CREATEROLE")
        conn.execute("CREATE ROLE app_truncate LOGIN")
        conn.execute("GRANT SELECT, TRUNCATE, TRIGGER ON good TO app_truncate")
    yield fresh_db
    with psycopg.connect(fresh_db.dsn(), autocommit=True) as conn:
        conn.execute("REVOKE ALL ON good FROM app_truncate")
        for role in ("app_bypass", "app_member", "app_creator", "app_truncate"):
            conn.execute(f"DROP ROLE {role}")


def test_lint_reports_every_leak_precisely(broken: Database) -> None:
    with psycopg.connect(broken.dsn(), autocommit=True) as conn:
        findings = lint(conn, app_roles=("app", "app_bypass", "app_member", "app_creator",
                                         "app_truncate", "table_owner", "ghost"))
    assert [(f.problem, f.subject) for f in findings] == sorted([
        (Problem.RLS_DISABLED, "public.no_rls"),
        (Problem.RLS_NOT_FORCED, "public.not_forced"),
        (Problem.PER_ROW_CONTEXT_CALL, "public.per_row.p"),
        (Problem.UNSIGNED_SETTING_IN_POLICY, "public.raw_setting.p"),
        (Problem.PERMISSIVE_POLICY_WITHOUT_CONTEXT, "public.raw_setting.p"),
        (Problem.NO_CONTEXT_POLICY, "public.raw_setting"),
        (Problem.PERMISSIVE_POLICY_WITHOUT_CONTEXT, "public.opened.admin_view"),
        (Problem.VIEW_BYPASSES_RLS, "public.good_view"),
        (Problem.APP_ROLE_BYPASSES_RLS, "app_bypass"),
        (Problem.APP_ROLE_READS_KEYS, "app_member"),
        (Problem.APP_ROLE_CREATES_ROLES, "app_creator"),
        (Problem.APP_ROLE_EXTRA_PRIVILEGE, "app_truncate"),
        (Problem.APP_ROLE_OWNS_TABLE, "table_owner"),
        (Problem.APP_ROLE_OWNS_TABLE, "table_owner"),
        (Problem.APP_ROLE_OWNS_TABLE, "table_owner"),
        (Problem.APP_ROLE_OWNS_TABLE, "table_owner"),
        (Problem.APP_ROLE_OWNS_TABLE, "table_owner"),
        (Problem.APP_ROLE_OWNS_TABLE, "table_owner"),
        # The database's owner: TEMPORARY and CREATE on it, CREATE on its schema public.
        (Problem.APP_ROLE_CREATES_OBJECTS, "table_owner"),
        (Problem.APP_ROLE_CREATES_OBJECTS, "table_owner"),
        (Problem.APP_ROLE_CREATES_OBJECTS, "table_owner"),
        (Problem.APP_ROLE_MISSING, "ghost"),
    ])


def test_lint_passes_a_clean_schema_and_exits_zero(
        fresh_db: Database, capsys: pytest.CaptureFixture[str]) -> None:
    with psycopg.connect(fresh_db.dsn("table_owner"), autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int, tenant_id text); SELECT tenantgate.isolate('t');")
    assert main(["db", "lint", "--dsn", fresh_db.dsn(), "--app-role", "app"]) == 0
    assert capsys.readouterr().out == "no findings\n"


def test_the_documented_schema_with_its_foreign_key_lints_clean(db: Database) -> None:
    # pgsupport.SCHEMA: keys led by the tenant column, the line's key pairing both columns.
    with psycopg.connect(db.dsn(), autocommit=True) as conn:
        assert lint(conn, app_roles=("app",)) == []


def test_lint_exits_non_zero_with_one_line_per_finding(
        broken: Database, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "lint", "--dsn", broken.dsn()]) == 1
    out = capsys.readouterr().out.splitlines()
    assert "rls_disabled: public.no_rls: has a tenant column but row level security is off: " \
           "run SELECT tenantgate.isolate('public.no_rls')" in out
    assert len(out) == 8


def test_lint_on_a_database_without_tenantgate_says_so(fresh_db: Database) -> None:
    with psycopg.connect(fresh_db.cluster.dsn(), autocommit=True) as conn:
        assert lint(conn) == [Finding(Problem.NOT_INSTALLED, "tenantgate", "schema tenantgate "
                                      "is missing: run `tenantgate db install`")]


@pytest.mark.parametrize("policy", [
    "FOR UPDATE USING (tenant_id = (SELECT tenantgate.current_tenant())) WITH CHECK (true)",
    "FOR UPDATE USING (true) WITH CHECK (tenant_id = (SELECT tenantgate.current_tenant()))",
], ids=["with_check_open", "using_open"])
def test_permissive_policy_with_one_open_clause_is_reported(fresh_db: Database,
                                                            policy: str) -> None:
    # Permissive policies are OR-ed per clause: an open WITH CHECK lets a tenant move its rows
    # to another tenant, an open USING lets it update another tenant's rows into its own.
    with psycopg.connect(fresh_db.dsn("table_owner"), autocommit=True) as conn:
        conn.execute("CREATE TABLE moves (id int, tenant_id text);"
                     " SELECT tenantgate.isolate('moves');"
                     f" CREATE POLICY support_edit ON moves {policy}")
        findings = lint(conn)
    assert [(f.problem, f.subject) for f in findings] == [
        (Problem.PERMISSIVE_POLICY_WITHOUT_CONTEXT, "public.moves.support_edit")]


@pytest.mark.parametrize("grant", [
    "GRANT SELECT (key_id, inner_pad, outer_pad) ON tenantgate.context_keys TO app_keys",
    "GRANT INSERT ON tenantgate.context_keys TO app_keys",
    "GRANT EXECUTE ON FUNCTION tenantgate.retire_key(text) TO app_keys",
    # A trigger of the app's on the key table runs as the owner when keys change: it can copy
    # every pad.
    "GRANT TRIGGER ON tenantgate.context_keys TO app_keys",
    "GRANT REFERENCES (key_id) ON tenantgate.context_keys TO app_keys",
], ids=["key_columns", "insert_key", "retire_key", "trigger", "references"])
def test_app_role_granted_key_columns_or_key_management_is_reported(fresh_db: Database,
                                                                   grant: str) -> None:
    # SELECT on the pad columns alone reads every key, INSERT adds a key to forge contexts
    # with, retire_key locks every tenant out.
    with psycopg.connect(fresh_db.dsn(), autocommit=True) as conn:
        conn.execute("CREATE ROLE app_keys LOGIN")
        try:
            conn.execute(grant)
            findings = lint_without_tenant_tables(conn, app_roles=("app_keys",))
        finally:
            conn.execute("DROP OWNED BY app_keys; DROP ROLE app_keys")
    assert [(f.problem, f.subject) for f in findings] == [(Problem.APP_ROLE_READS_KEYS,
                                                           "app_keys")]


def test_foreign_key_into_a_tenant_table_without_the_tenant_column_is_reported(
        fresh_db: Database) -> None:
    # Foreign key checks and cascades ignore RLS: a key on the id alone lets a tenant probe
    # other tenants' ids, attach its rows to theirs and block or cascade into their deletes.
    with psycopg.connect(fresh_db.dsn("table_owner"), autocommit=True) as conn:
        conn.execute("""
            CREATE TABLE parent (id int PRIMARY KEY, tenant_id text NOT NULL,
                                 UNIQUE (tenant_id, id));
            CREATE TABLE by_id (id int, tenant_id text, parent_id int REFERENCES parent (id));
            CREATE TABLE by_tenant_and_id (id int, tenant_id text, parent_id int,
                FOREIGN KEY (tenant_id, parent_id) REFERENCES parent (tenant_id, id));
            CREATE TABLE shared (id int, parent_id int REFERENCES parent (id) ON DELETE CASCADE);
            CREATE TABLE untenanted (id int PRIMARY KEY);
            CREATE TABLE to_untenanted (id int, tenant_id text, u int REFERENCES untenanted);
            SELECT tenantgate.isolate(t) FROM unnest(ARRAY['parent', 'by_id',
                'by_tenant_and_id', 'to_untenanted']::regclass[]) AS t;
        """)
        findings = lint(conn)
    assert [str(f) for f in findings] == [
        "foreign_key_without_tenant: public.by_id.by_id_parent_id_fkey: public.by_id references"
        " public.parent without tenant_id: foreign key checks and cascades ignore row level"
        " security, so one tenant can probe, block and cascade into another's rows; reference"
        " (tenant_id, id), with a UNIQUE (tenant_id, id) on public.parent",
        "foreign_key_without_tenant: public.shared.shared_parent_id_fkey: public.shared"
        " references public.parent without tenant_id: foreign key checks and cascades ignore"
        " row level security, so one tenant can probe, block and cascade into another's rows;"
        " reference (tenant_id, id), with a UNIQUE (tenant_id, id) on public.parent",
    ]


def lint_new_app_role(db: Database, change: str, inherited: bool) -> list[Finding]:
    """Lint a new app role, app_new, after `change` to it, or to new_group, a role it is a
    member of (change names it {role})."""
    with psycopg.connect(db.dsn(), autocommit=True) as conn:
        conn.execute("CREATE ROLE app_new LOGIN; CREATE ROLE new_group;"
                     " GRANT new_group TO app_new")
        try:
            conn.execute(change.format(role="new_group" if inherited else "app_new"))
            return lint_without_tenant_tables(conn, app_roles=("app_new",))
        finally:
            conn.execute("DROP ROLE app_new; DROP ROLE new_group")


@pytest.mark.parametrize(("granted", "inherited"), [
    ("pg_read_server_files", False), ("pg_write_server_files", False),
    ("pg_execute_server_program", False), ("pg_execute_server_program", True),
], ids=["read_files", "write_files", "execute_program", "execute_program_inherited"])
def test_app_role_that_reads_or_writes_server_files_is_reported(
        fresh_db: Database, granted: str, inherited: bool) -> None:
    # COPY ... FROM PROGRAM 'cat <data file of tenantgate.context_keys>' reads every key's
    # pads, whatever the table's privileges say.
    findings = lint_new_app_role(fresh_db, f"GRANT {granted} TO {{role}}", inherited)
    assert [(f.problem, f.subject, f.detail.split(":")[0]) for f in findings] == [
        (Problem.APP_ROLE_READS_KEYS, "app_new", f"is a member of {granted}")]


def test_app_role_granted_references_on_one_column_is_reported(fresh_db: Database) -> None:
    # REFERENCES (id) is enough for a foreign key of the app's own whose checks, run without
    # RLS, tell which ids other tenants use.
    with psycopg.connect(fresh_db.dsn("table_owner"), autocommit=True) as conn:
        conn.execute("CREATE TABLE secrets (id int PRIMARY KEY, tenant_id text);"
                     " SELECT tenantgate.isolate('secrets');"
                     " GRANT SELECT, REFERENCES (id) ON secrets TO app")
        try:
            findings = lint(conn, app_roles=("app",))
        finally:
            conn.execute("REVOKE ALL ON secrets FROM app")
    assert [(f.problem, f.subject, f.detail.split(":")[0]) for f in findings] == [
        (Problem.APP_ROLE_EXTRA_PRIVILEGE, "app", "has REFERENCES on public.secrets")]


def test_policy_reading_the_setting_under_another_spelling_is_reported(
        fresh_db: Database) -> None:
    # Setting names are case-insensitive: the app role may SET tenantgate.context to a bare
    # tenant id, and this policy would trust it.
    with psycopg.connect(fresh_db.dsn("table_owner"), autocommit=True) as conn:
        conn.execute("CREATE TABLE docs (id int, tenant_id text);"
                     " SELECT tenantgate.isolate('docs');"
                     " CREATE POLICY support ON docs FOR SELECT USING ("
                     "   tenant_id = (SELECT tenantgate.current_tenant())"
                     "   OR tenant_id = current_setting('TenantGate.Context', true))")
        findings = lint(conn)
    assert [(f.problem, f.subject) for f in findings] == [
        (Problem.UNSIGNED_SETTING_IN_POLICY, "public.docs.support")]


def test_policy_on_the_subject_or_a_look_alike_schema_is_no_tenant_check(
        fresh_db: Database) -> None:
    # A context for tenant acme whose subject is "globex" read globex's rows through
    # subject_is_tenant; my_tenantgate.current_tenant() trusts the unsigned setting.
    with psycopg.connect(fresh_db.dsn("table_owner"), autocommit=True) as conn:
        conn.execute("""
            CREATE TABLE subject_is_tenant (id int, tenant_id text);
            ALTER TABLE subject_is_tenant ENABLE ROW LEVEL SECURITY;
            ALTER TABLE subject_is_tenant FORCE ROW LEVEL SECURITY;
            CREATE POLICY p ON subject_is_tenant
                USING (tenant_id = (SELECT tenantgate.current_subject()))
                WITH CHECK (tenant_id = (SELECT tenantgate.current_subject()));
            CREATE SCHEMA my_tenantgate;
            CREATE FUNCTION my_tenantgate.current_tenant() RETURNS text LANGUAGE sql STABLE
                AS $$ SELECT current_setting('tenantgate.context', true) $$;
            CREATE TABLE look_alike (id int, tenant_id text);
            ALTER TABLE look_alike ENABLE ROW LEVEL SECURITY;
            ALTER TABLE look_alike FORCE ROW LEVEL SECURITY;
            CREATE POLICY p ON look_alike
                USING (tenant_id = (SELECT my_tenantgate.current_tenant()));
        """)
        findings = lint(conn)
    assert [(f.problem, f.subject) for f in findings] == [
        (Problem.NO_CONTEXT_POLICY, "public.look_alike"),
        (Problem.NO_CONTEXT_POLICY, "public.subject_is_tenant"),
        (Problem.PERMISSIVE_POLICY_WITHOUT_CONTEXT, "public.look_alike.p"),
        (Problem.WRONG_CONTEXT_CALL, "public.subject_is_tenant.p"),
    ]


def hand_isolated(table: str, column_sql: str, compared: str = "tenant_id") -> str:
    """A table isolated by hand, as tenantgate.isolate() would refuse to."""
    return f"""
        CREATE TABLE {table} (id int, tenant_id {column_sql});
        ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;
        ALTER TABLE {table} FORCE ROW LEVEL SECURITY;
        CREATE POLICY p ON {table} USING ({compared} = (SELECT tenantgate.current_tenant()))
            WITH CHECK ({compared} = (SELECT tenantgate.current_tenant()));"""


def test_tenant_column_that_is_not_text_or_varchar_is_reported(fresh_db: Database) -> None:
    # character(n) compares without trailing blanks; isolate() refuses both, lint did not.
    with psycopg.connect(fresh_db.dsn("table_owner"), autocommit=True) as conn:
        conn.execute(hand_isolated("by_number", "integer", "tenant_id::text")
                     + hand_isolated("padded", "character(8)")
                     + hand_isolated("limited", "varchar(40)"))
        findings = lint(conn)
    assert [str(f) for f in findings] == [
        "unsafe_tenant_column: public.by_number: tenant_id is integer: tenant columns must be"
        " text or varchar, whose = compares tenant ids exactly",
        "unsafe_tenant_column: public.padded: tenant_id is character: tenant columns must be"
        " text or varchar, whose = compares tenant ids exactly",
    ]


def test_tenant_column_with_a_nondeterministic_collation_is_reported(fresh_db: Database) -> None:
    # Under a case-insensitive collation a context for ACME read acme's rows through this
    # policy. isolate() refuses such a column; a policy made by hand did pass lint.
    create_case_insensitive_collation(fresh_db)
    with psycopg.connect(fresh_db.dsn("table_owner"), autocommit=True) as conn:
        conn.execute(hand_isolated("ci", "text COLLATE tenant_ci"))
        findings = lint(conn)
    assert [str(f) for f in findings] == [
        "unsafe_tenant_column: public.ci: tenant_id has the nondeterministic collation"
        " public.tenant_ci: tenant ids differing only in case would share rows; use a deterministic"
        " one"]


@pytest.mark.parametrize("inherited", [False, True], ids=["direct", "through_a_role"])
def test_app_role_with_replication_is_reported(fresh_db: Database, inherited: bool) -> None:
    # With wal_level = logical, pg_create_logical_replication_slot(..., 'test_decoding') hands a
    # REPLICATION role every tenant's inserts and the pads of every key added since; a member
    # reaches it by SET ROLE.
    findings = lint_new_app_role(fresh_db, "ALTER ROLE {role} REPLICATION", inherited)
    via = " through membership in new_group" if inherited else ""
    assert [str(f) for f in findings] == [
        f"app_role_bypasses_rls: app_new: has REPLICATION{via}: a logical replication slot"
        " (wal_level = logical) decodes every tenant's writes, and the context keys' pads, from"
        " the WAL; a base backup copies every table"]


# Isolated by hand, as isolate() did before schema version 4 (which refuses a child of a
# parent that lets rows through).
INHERITED_SCHEMA = """
CREATE TABLE docs_base (id int, secret text);
CREATE TABLE docs (tenant_id text NOT NULL) INHERITS (docs_base);
CREATE TABLE docs_archive () INHERITS (docs);
INSERT INTO docs VALUES (1, 'acme secret', 'acme'), (2, 'globex secret', 'globex');
ALTER TABLE docs ENABLE ROW LEVEL SECURITY; ALTER TABLE docs FORCE ROW LEVEL SECURITY;
CREATE POLICY p ON docs USING (tenant_id = (SELECT tenantgate.current_tenant()));
ALTER TABLE docs_archive ENABLE ROW LEVEL SECURITY;
ALTER TABLE docs_archive FORCE ROW LEVEL SECURITY;
CREATE POLICY p ON docs_archive USING (tenant_id = (SELECT tenantgate.current_tenant()));
GRANT SELECT, UPDATE ON docs, docs_archive, docs_base TO app;
"""


def test_inheritance_parent_without_the_tenant_column_is_reported(fresh_db: Database) -> None:
    # Querying a parent applies the parent's policies to the children's rows, never theirs:
    # acme's context read and defaced globex's row through docs_base, and lint said nothing.
    with psycopg.connect(fresh_db.dsn("table_owner"), autocommit=True) as conn:
        conn.execute(INHERITED_SCHEMA)
        findings = lint(conn, app_roles=("app",))
    with fresh_db.connect() as conn, conn.transaction():
        conn.execute(SET_CONTEXT_SQL, [fresh_db.ring.sign("acme", "alice", "r", 60)])
        assert conn.execute("SELECT secret FROM docs ORDER BY id").fetchall() == [
            ("acme secret",)]
        assert conn.execute("SELECT secret FROM docs_base ORDER BY id").fetchall() == [
            ("acme secret",), ("globex secret",)]
    assert [str(f) for f in findings] == [
        "unisolated_parent: public.docs_base: has no tenant_id but is a parent of public.docs,"
        " public.docs_archive, and row level security is off: a query on it reads, updates and"
        " deletes their rows under its policies, not theirs; add tenant_id to it and isolate it,"
        " or enable and force row level security on it with no permissive policy"]


@pytest.mark.parametrize(("protection", "expected"), [
    ("ALTER TABLE docs_base ENABLE ROW LEVEL SECURITY",
     ["row level security is not forced"]),
    ("ALTER TABLE docs_base ENABLE ROW LEVEL SECURITY; ALTER TABLE docs_base FORCE ROW LEVEL"
     " SECURITY; CREATE POLICY everyone ON docs_base USING (true);"
     " CREATE POLICY narrow ON docs_base AS RESTRICTIVE USING (id > 0)",
     ["its permissive policies (everyone) let rows through"]),
    ("ALTER TABLE docs_base ENABLE ROW LEVEL SECURITY; ALTER TABLE docs_base FORCE ROW LEVEL"
     " SECURITY; CREATE POLICY narrow ON docs_base AS RESTRICTIVE USING (id > 0)", []),
], ids=["not_forced", "permissive_policy", "lets_nothing_through"])
def test_inheritance_parent_must_let_no_row_through(fresh_db: Database, protection: str,
                                                    expected: list[str]) -> None:
    with psycopg.connect(fresh_db.dsn("table_owner"), autocommit=True) as conn:
        conn.execute(f"CREATE TABLE docs_base (id int, secret text); {protection};"
                     f" {INHERITED_SCHEMA.split(';', 1)[1]}")
        findings = lint(conn, app_roles=("app",))
    assert [f.detail.split("public.docs_archive, and ")[1].split(":")[0]
            for f in findings] == expected
    if not expected:
        with fresh_db.connect() as conn, conn.transaction():
            conn.execute(SET_CONTEXT_SQL, [fresh_db.ring.sign("acme", "alice", "r", 60)])
            assert conn.execute("SELECT count(*) FROM docs_base").fetchone() == (0,)


def test_a_partition_inherits_its_parents_tenant_column_and_the_parent_is_checked_itself(
        fresh_db: Database) -> None:
    # Partitions have their parents' columns, so a parent is a tenant table of its own.
    with psycopg.connect(fresh_db.dsn("table_owner"), autocommit=True) as conn:
        conn.execute("CREATE TABLE events (tenant_id text NOT NULL, id int)"
                     " PARTITION BY LIST (tenant_id);"
                     " CREATE TABLE events_a PARTITION OF events FOR VALUES IN ('acme');"
                     " SELECT tenantgate.isolate('events_a')")
        findings = lint(conn)
    assert [(f.problem, f.subject) for f in findings] == [(Problem.RLS_DISABLED, "public.events")]


def rows_a_temporary_table_catches(db: Database, user: str, plant: str) -> list[tuple[int]]:
    """On one session of `user`: `plant` a temporary invoices, let globex insert a row, and
    read back what the temporary table caught."""
    with db.connect(user) as shared:
        shared.execute(plant)
        with shared.transaction():
            shared.execute(SET_CONTEXT_SQL, [db.ring.sign("globex", "bob", "r", 60)])
            shared.execute("INSERT INTO invoices (id) VALUES (7)")
        return shared.execute("SELECT id FROM pg_temp.invoices").fetchall()


def test_temporary_table_on_a_shared_session_takes_other_tenants_rows_and_lint_reports_it(
        fresh_db: Database) -> None:
    # A new database lets PUBLIC create temporary tables. On a server session that clients
    # share (PgBouncer's transaction pooling), a client's TEMP TABLE invoices comes before
    # public.invoices for every later transaction: the next tenant writes into it, without
    # row level security, and the first client reads it back.
    with psycopg.connect(fresh_db.dsn("table_owner"), autocommit=True) as conn:
        conn.execute(f'GRANT TEMPORARY ON DATABASE "{fresh_db.name}" TO PUBLIC;'
                     " CREATE TABLE invoices (id int, tenant_id text NOT NULL"
                     "   DEFAULT tenantgate.current_tenant());"
                     " SELECT tenantgate.isolate('invoices'); GRANT SELECT, INSERT ON invoices"
                     " TO app")
        findings = lint(conn, app_roles=("app",))
    assert rows_a_temporary_table_catches(
        fresh_db, "app", "CREATE TEMP TABLE invoices (id int, tenant_id text)") == [(7,)]
    assert [str(f) for f in findings] == [
        f"app_role_creates_objects: app: may create temporary tables in database"
        f" {fresh_db.name}: Postgres looks in pg_temp first, so on a pooled server session a"
        " temporary table named like a tenant table takes later transactions' rows, every"
        " tenant's, without row level security; REVOKE TEMPORARY ON DATABASE"
        f" {fresh_db.name} FROM PUBLIC, app (and from any role it is a member of; an owner"
        " keeps it)"]
    with psycopg.connect(fresh_db.dsn(), autocommit=True) as conn:
        conn.execute(f'REVOKE TEMPORARY ON DATABASE "{fresh_db.name}" FROM PUBLIC, app')
        assert lint(conn, app_roles=("app",)) == []
    with fresh_db.connect() as shared, pytest.raises(psycopg.errors.InsufficientPrivilege):
        shared.execute("CREATE TEMP TABLE invoices (id int, tenant_id text)")


@pytest.mark.parametrize(("grant", "revoke", "detail"), [
    ("GRANT CREATE ON SCHEMA public TO PUBLIC", "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
     "may create objects in schema public: its tables have no row level security, and in a"
     " schema earlier in the search_path they shadow the tenant tables; REVOKE CREATE ON"
     " SCHEMA public FROM PUBLIC, app"),
    ("GRANT CREATE ON DATABASE {db} TO app", "REVOKE CREATE ON DATABASE {db} FROM app",
     "may create schemas in database {db}: one named after the role comes first in the"
     " default search_path, and its tables shadow the tenant tables; REVOKE CREATE ON"
     " DATABASE {db} FROM PUBLIC, app"),
], ids=["schema_public", "database"])
def test_app_role_that_may_create_tables_beside_the_tenant_tables_is_reported(
        fresh_db: Database, grant: str, revoke: str, detail: str) -> None:
    # Up to PostgreSQL 14 PUBLIC may create in schema public. A table the app makes has no
    # RLS; a schema "app" of its own comes first in the default search_path ("$user", public)
    # and its invoices would take every tenant's queries on every app session.
    with psycopg.connect(fresh_db.dsn("table_owner"), autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int, tenant_id text); SELECT tenantgate.isolate('t');"
                     f" {grant.format(db=fresh_db.name)}")
        findings = lint(conn, app_roles=("app",))
        conn.execute(revoke.format(db=fresh_db.name))
        assert lint(conn, app_roles=("app",)) == []
    assert [str(f) for f in findings] == [
        f"app_role_creates_objects: app: {detail.format(db=fresh_db.name)} (and from any role"
        " it is a member of; an owner keeps it)"]


def test_a_tenant_column_no_table_has_is_a_finding_not_a_pass(
        fresh_db: Database, capsys: pytest.CaptureFixture[str]) -> None:
    # A misspelt --tenant-column checked no table at all and said "no findings", exit 0: a
    # migration gate that passes every schema.
    with psycopg.connect(fresh_db.dsn("table_owner"), autocommit=True) as conn:
        conn.execute("CREATE TABLE open_table (id int, tenant_id text)")
    assert main(["db", "lint", "--dsn", fresh_db.dsn(), "--tenant-column", "tenant"]) == 1
    assert capsys.readouterr().out == (
        "no_tenant_tables: tenant: no table has this tenant column, so no table was checked:"
        " is the column name right?\n")


def test_rls_disabled_remedy_quotes_a_hostile_table_name_and_names_the_column(
        fresh_db: Database) -> None:
    # The suggested SQL is pasted as is: the name went into the literal unescaped (a table
    # named x');drop table ... suggested a DROP), and isolate() was not told the column.
    with psycopg.connect(fresh_db.dsn("table_owner"), autocommit=True) as conn:
        conn.execute("""CREATE TABLE "x');drop table victim;--" (org text);"""
                     " CREATE TABLE victim (org text); CREATE TABLE \"back\\slash\" (org text)")
        findings = lint(conn, tenant_column="org")
        remedies = [f.detail.split("run ")[1] for f in findings]
        assert remedies == [
            """SELECT tenantgate.isolate(E'public."back\\\\slash"', 'org')""",
            """SELECT tenantgate.isolate('public."x'');drop table victim;--"', 'org')""",
            "SELECT tenantgate.isolate('public.victim', 'org')"]
        for remedy in remedies:
            conn.execute(remedy)
        assert lint(conn, tenant_column="org") == []


# How an app role may be a member of a role without inheriting its privileges: it still takes
# them with SET ROLE, and keeps what it made after RESET ROLE.
NOT_INHERITED = {
    "noinherit_role": "ALTER ROLE app_new NOINHERIT; GRANT helper TO app_new",
    "with_inherit_false": "GRANT helper TO app_new WITH INHERIT FALSE",  # PostgreSQL 16+
}


@pytest.fixture(params=sorted(NOT_INHERITED))
def helper_not_inherited(fresh_db: Database, request: pytest.FixtureRequest) -> Database:
    """fresh_db with invoices (isolated, app_new may use it) and app_new, a member of helper
    that does not inherit helper's privileges."""
    if request.param == "with_inherit_false" and fresh_db.version < 16:
        pytest.skip("GRANT ... WITH INHERIT is PostgreSQL 16+")
    with psycopg.connect(fresh_db.dsn("table_owner"), autocommit=True) as conn:
        conn.execute("CREATE TABLE invoices (id int PRIMARY KEY, tenant_id text NOT NULL"
                     "   DEFAULT tenantgate.current_tenant());"
                     " SELECT tenantgate.isolate('invoices')")
    with psycopg.connect(fresh_db.dsn(), autocommit=True) as conn:
        conn.execute("CREATE ROLE app_new LOGIN; CREATE ROLE helper;"
                     f" {NOT_INHERITED[request.param]};"
                     " GRANT SELECT, INSERT ON invoices TO app_new")
    yield fresh_db
    with psycopg.connect(fresh_db.dsn(), autocommit=True) as conn:
        conn.execute("DROP OWNED BY app_new, helper; DROP ROLE app_new; DROP ROLE helper")


def test_temporary_table_made_through_set_role_to_a_role_not_inherited_is_reported(
        helper_not_inherited: Database) -> None:
    # has_database_privilege(app_new, ...) counts inherited privileges only: lint said "no
    # findings", yet SET ROLE helper made the temporary table that took globex's insert.
    db = helper_not_inherited
    with psycopg.connect(db.dsn(), autocommit=True) as conn:
        conn.execute(f'GRANT TEMPORARY ON DATABASE "{db.name}" TO helper')
        findings = lint(conn, app_roles=("app_new",))
    assert rows_a_temporary_table_catches(
        db, "app_new", "SET ROLE helper; CREATE TEMP TABLE invoices (id int, tenant_id text);"
        " GRANT ALL ON pg_temp.invoices TO PUBLIC; RESET ROLE") == [(7,)]
    assert [str(f) for f in findings] == [
        f"app_role_creates_objects: app_new: may create temporary tables in database {db.name}"
        " through membership in helper: Postgres looks in pg_temp first, so on a pooled server"
        " session a temporary table named like a tenant table takes later transactions' rows,"
        f" every tenant's, without row level security; REVOKE TEMPORARY ON DATABASE {db.name}"
        " FROM PUBLIC, helper (and from any role it is a member of; an owner keeps it)"]
    with psycopg.connect(db.dsn(), autocommit=True) as conn:
        conn.execute(f'REVOKE TEMPORARY ON DATABASE "{db.name}" FROM helper')
        assert lint(conn, app_roles=("app_new",)) == []


@pytest.mark.parametrize(("grant", "expected"), [
    ("GRANT CREATE ON DATABASE {db} TO helper",
     "may create schemas in database {db} through membership in helper"),
    ("GRANT CREATE ON SCHEMA public TO helper",
     "may create objects in schema public through membership in helper"),
    ("GRANT TRUNCATE ON invoices TO helper",
     "has TRUNCATE on public.invoices through membership in helper"),
    ("GRANT TRIGGER, REFERENCES (id) ON invoices TO helper",
     "has TRIGGER, REFERENCES on public.invoices through membership in helper"),
], ids=["create_on_database", "create_on_schema", "truncate", "trigger_references"])
def test_privilege_of_a_role_not_inherited_but_reachable_by_set_role_is_reported(
        helper_not_inherited: Database, grant: str, expected: str) -> None:
    # SET ROLE helper; TRUNCATE invoices empties every tenant's rows, RLS or not.
    db = helper_not_inherited
    with psycopg.connect(db.dsn(), autocommit=True) as conn:
        conn.execute(grant.format(db=f'"{db.name}"'))
        findings = lint(conn, app_roles=("app_new",))
    assert [f.detail.split(":")[0] for f in findings] == [expected.format(db=db.name)]


def test_a_right_the_app_role_holds_itself_is_not_reported_again_through_a_member(
        helper_not_inherited: Database) -> None:
    db = helper_not_inherited
    with psycopg.connect(db.dsn(), autocommit=True) as conn:
        conn.execute(f'GRANT TEMPORARY ON DATABASE "{db.name}" TO app_new, helper;'
                     " GRANT TRUNCATE ON invoices TO app_new;"
                     " GRANT TRUNCATE, TRIGGER ON invoices TO helper")
        findings = lint(conn, app_roles=("app_new",))
    assert sorted(f.detail.split(":")[0] for f in findings) == [
        "has TRIGGER on public.invoices through membership in helper",
        "has TRUNCATE on public.invoices",
        f"may create temporary tables in database {db.name}"]
