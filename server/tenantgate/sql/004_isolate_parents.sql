-- tenantgate schema, version 4: isolate() refuses a table whose inheritance parent lets its rows
-- through.
--
-- A query on a parent applies the parent's row level security to the children's rows, never
-- the children's own: a parent without the tenant column and without forced RLS of its own
-- read, updated and deleted every tenant's rows of a table isolate() had isolated. Such a parent
-- must let no row through (RLS enabled and forced, no permissive policy). `tenantgate db lint`
-- reports one that exists already (unisolated_parent). Idempotent, like the earlier versions.

SET ROLE tenantgate_owner;

-- Enable and force RLS on a table and (re)create one policy per command comparing the tenant
-- column with the verified context. `(SELECT tenantgate.current_tenant())` makes the planner
-- evaluate the check once per statement (an InitPlan), not once per row. Run as the table owner.
CREATE OR REPLACE FUNCTION tenantgate.isolate(target regclass, tenant_column name DEFAULT 'tenant_id')
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    column_type      regtype;
    column_collation oid;
    open_parent      regclass;
    check_expr       text := format('%I = (SELECT tenantgate.current_tenant())', tenant_column);
BEGIN
    SELECT a.atttypid::regtype, a.attcollation INTO column_type, column_collation
      FROM pg_attribute a
     WHERE a.attrelid = target AND a.attname = tenant_column AND a.attnum > 0
       AND NOT a.attisdropped;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'tenantgate.isolate: table % has no column %', target, tenant_column;
    END IF;
    IF column_type NOT IN ('text'::regtype, 'character varying'::regtype) THEN
        RAISE EXCEPTION 'tenantgate.isolate: column %.% is %, tenant columns must be text or varchar',
            target, tenant_column, column_type;
    END IF;
    -- The policies compare with the column's collation: a nondeterministic one (case- or
    -- accent-insensitive) would let tenant ids that differ only in case read each other's rows.
    IF EXISTS (SELECT 1 FROM pg_collation c
                WHERE c.oid = column_collation AND NOT c.collisdeterministic) THEN
        RAISE EXCEPTION 'tenantgate.isolate: column %.% has the nondeterministic collation %, '
            'tenant ids differing only in case would share rows; use a deterministic one',
            target, tenant_column, column_collation::regcollation;
    END IF;
    -- A query on an inheritance parent applies the parent's policies to this table's rows, not
    -- these: a parent without the tenant column must let no row through. (A partition's
    -- parents have its columns; isolate them as tenant tables.)
    WITH RECURSIVE up(parent) AS (
        SELECT i.inhparent FROM pg_inherits i WHERE i.inhrelid = target
        UNION
        SELECT i.inhparent FROM up JOIN pg_inherits i ON i.inhrelid = up.parent
    )
    SELECT c.oid::regclass INTO open_parent
      FROM up JOIN pg_class c ON c.oid = up.parent
     WHERE NOT EXISTS (SELECT 1 FROM pg_attribute a
                        WHERE a.attrelid = c.oid AND a.attname = tenant_column
                          AND a.attnum > 0 AND NOT a.attisdropped)
       AND (NOT (c.relrowsecurity AND c.relforcerowsecurity)
            OR EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid AND p.polpermissive))
     ORDER BY c.oid::regclass::text
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'tenantgate.isolate: % inherits from %, which has no column % and lets rows '
            'through: a query on it would read and write every tenant''s rows of %; add % to it '
            'and isolate it, or enable and force row level security on it with no permissive '
            'policy', target, open_parent, tenant_column, target, tenant_column;
    END IF;
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', target);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', target);
    EXECUTE format('DROP POLICY IF EXISTS tenantgate_select ON %s', target);
    EXECUTE format('DROP POLICY IF EXISTS tenantgate_insert ON %s', target);
    EXECUTE format('DROP POLICY IF EXISTS tenantgate_update ON %s', target);
    EXECUTE format('DROP POLICY IF EXISTS tenantgate_delete ON %s', target);
    EXECUTE format('CREATE POLICY tenantgate_select ON %s FOR SELECT USING (%s)',
                   target, check_expr);
    EXECUTE format('CREATE POLICY tenantgate_insert ON %s FOR INSERT WITH CHECK (%s)',
                   target, check_expr);
    EXECUTE format('CREATE POLICY tenantgate_update ON %s FOR UPDATE USING (%s) WITH CHECK (%s)',
                   target, check_expr, check_expr);
    EXECUTE format('CREATE POLICY tenantgate_delete ON %s FOR DELETE USING (%s)',
                   target, check_expr);
END
$$;

INSERT INTO tenantgate.schema_version (version) VALUES (4) ON CONFLICT (version) DO NOTHING;

RESET ROLE;
