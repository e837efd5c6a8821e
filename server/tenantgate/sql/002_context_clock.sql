-- tenantgate schema, version 2: a context expires by the clock, not at the statement's start.
--
-- Version 1 compared `exp` with statement_timestamp(), which stays the same for a whole
-- top-level command: a DO block, a function, or several statements sent in one simple-query
-- message could loop over one context and read and write its tenant's rows long after it
-- expired. verify_context() now also compares `exp` with clock_timestamp(). The policies'
-- InitPlan still evaluates it once per statement, so a statement costs what it did.
--
-- Version 1's function keeps its checks under the name verify_signed_context(), executable by
-- its owner only; verify_context() wraps it. Idempotent, like version 1.

SET ROLE tenantgate_owner;

DO $rename$
BEGIN
    IF pg_catalog.to_regprocedure('tenantgate.verify_signed_context(text)') IS NULL THEN
        ALTER FUNCTION tenantgate.verify_context(text) RENAME TO verify_signed_context;
    END IF;
END
$rename$;

CREATE OR REPLACE FUNCTION tenantgate.verify_context(context text)
RETURNS tenantgate.context_claims
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    claims tenantgate.context_claims := tenantgate.verify_signed_context(context);
BEGIN
    IF claims.expires_at IS NULL
       OR claims.expires_at <= extract(epoch FROM pg_catalog.clock_timestamp()) THEN
        RETURN NULL;
    END IF;
    RETURN claims;
END
$$;

REVOKE ALL ON FUNCTION tenantgate.verify_signed_context(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION tenantgate.verify_context(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenantgate.verify_context(text) TO PUBLIC;

INSERT INTO tenantgate.schema_version (version) VALUES (2) ON CONFLICT (version) DO NOTHING;

RESET ROLE;
