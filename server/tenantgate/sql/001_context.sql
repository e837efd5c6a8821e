-- tenantgate schema, version 1: signed tenant context verification, RLS helper, key management.
--
-- Needs PostgreSQL 13+ and no extension: HMAC-SHA256 is built from the core sha256() function.
-- Run as a superuser, or as a role with CREATEROLE that may create schemas in this database.
-- Idempotent: running it twice changes nothing. `tenantgate db install` runs it in a transaction;
-- with your own migration tool, run the files of `tenantgate db print-sql` in order.
--
-- Role model
--   tenantgate_owner  NOLOGIN; owns the schema, the key table and the functions. The verify
--                     functions run as this role (SECURITY DEFINER), so only they read keys.
--   tenantgate_admin  NOLOGIN; may call the key management functions. Grant it to the role that
--                     runs `tenantgate db add-key ...`, never to the application.
--   your app role     LOGIN, not the owner of the isolated tables, no BYPASSRLS, no membership
--                     in the two roles above. It may call current_tenant()/current_subject().

DO $roles$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'tenantgate_owner') THEN
        CREATE ROLE tenantgate_owner NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'tenantgate_admin') THEN
        CREATE ROLE tenantgate_admin NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
    END IF;
    -- A non-superuser installer must be able to SET ROLE to the owner role to hand it objects.
    -- From PostgreSQL 16 on, creating a role grants its creator only ADMIN on it, which counts
    -- as MEMBER but not SET: ask for SET there.
    IF NOT (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user)
       AND NOT pg_catalog.pg_has_role(current_user, 'tenantgate_owner',
               CASE WHEN pg_catalog.current_setting('server_version_num')::int >= 160000
                    THEN 'SET' ELSE 'MEMBER' END) THEN
        EXECUTE pg_catalog.format('GRANT tenantgate_owner TO %I', current_user);
    END IF;
END
$roles$;

CREATE SCHEMA IF NOT EXISTS tenantgate AUTHORIZATION tenantgate_owner;
REVOKE ALL ON SCHEMA tenantgate FROM PUBLIC;
GRANT USAGE ON SCHEMA tenantgate TO PUBLIC;

-- Everything below is created by, and therefore owned by, the owner role.
SET ROLE tenantgate_owner;

CREATE TABLE IF NOT EXISTS tenantgate.schema_version (
    version      integer PRIMARY KEY,
    installed_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
REVOKE ALL ON tenantgate.schema_version FROM PUBLIC;
GRANT SELECT ON tenantgate.schema_version TO PUBLIC;

-- The HMAC key ring. inner_pad/outer_pad are the RFC 2104 padded key forms
-- (key XOR 0x36.., key XOR 0x5c.., 64 bytes each), so a verify is two sha256() calls.
-- They are as secret as the key itself: only tenantgate_owner can read this table.
CREATE TABLE IF NOT EXISTS tenantgate.context_keys (
    key_id       text PRIMARY KEY CHECK (key_id ~ '^[A-Za-z0-9_-]{1,32}$'),
    state        text NOT NULL CHECK (state IN ('pending', 'active', 'retired')),
    inner_pad    bytea CHECK (octet_length(inner_pad) = 64),
    outer_pad    bytea CHECK (octet_length(outer_pad) = 64),
    -- HMAC(key, 'tenantgate key fingerprint'): compares a key with the config, reveals nothing.
    fingerprint  text NOT NULL,
    -- base64url of the exact header tenantgate writes for this key: a lookup, not a JSON parse.
    header_b64   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
    activated_at timestamptz,
    retired_at   timestamptz,
    -- A retired key keeps no key material.
    CHECK ((state = 'retired') = (inner_pad IS NULL AND outer_pad IS NULL))
);
REVOKE ALL ON tenantgate.context_keys FROM PUBLIC;

DO $type$
BEGIN
    IF pg_catalog.to_regtype('tenantgate.context_claims') IS NULL THEN
        CREATE TYPE tenantgate.context_claims AS (
            tenant     text,
            subject    text,
            request_id text,
            key_id     text,
            expires_at bigint
        );
    END IF;
END
$type$;

-- base64url (no padding) to bytes; raises on bad input, callers catch.
CREATE OR REPLACE FUNCTION tenantgate._b64url(part text) RETURNS bytea
LANGUAGE sql IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT decode(rpad(translate(part, '-_', '+/'), (octet_length(part) + 3) / 4 * 4, '='),
                  'base64')
$$;

-- The RFC 2104 padded form of a key: keys longer than the 64-byte block are hashed first.
CREATE OR REPLACE FUNCTION tenantgate._pad(secret bytea, pad integer) RETURNS bytea
LANGUAGE plpgsql IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    key    bytea := secret;
    padded bytea;
BEGIN
    IF octet_length(key) > 64 THEN
        key := sha256(key);
    END IF;
    key := key || decode(repeat('00', 64 - octet_length(key)), 'hex');
    padded := key;
    FOR i IN 0..63 LOOP
        padded := set_byte(padded, i, get_byte(key, i) # pad);
    END LOOP;
    RETURN padded;
END
$$;

-- Verify a signed tenant context (the compact HS256 JWS of tenantgate.context) and return its
-- claims, or NULL. Never raises: garbage, bad base64 or JSON, wrong types, an unknown, pending or
-- retired key, a bad signature or an expired context all give NULL (fail closed).
CREATE OR REPLACE FUNCTION tenantgate.verify_context(context text)
RETURNS tenantgate.context_claims
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    parts        text[];
    part         text;
    header       json;
    payload_text text;
    payload      json;
    has_nul      boolean;
    key_id       text;
    key_inner    bytea;
    key_outer    bytea;
    tenant       json;
    subject      json;
    request_id   json;
    issued_at    json;
    expires_at   json;
    claims       tenantgate.context_claims;
BEGIN
    -- Cheap shape checks first (a negated character class is the cheapest regex here):
    -- ASCII base64url in three non-empty parts, bounded size, a 32-byte (43 char) signature.
    IF context IS NULL OR octet_length(context) > 4096 OR context ~ '[^A-Za-z0-9_.-]' THEN
        RETURN NULL;
    END IF;
    parts := string_to_array(context, '.');
    -- The 43rd character carries two unused bits: only the canonical spelling (bits zero)
    -- is accepted, as in Python, so one signature has exactly one spelling.
    IF cardinality(parts) <> 3 OR octet_length(parts[3]) <> 43 OR parts[1] = ''
       OR parts[2] = '' OR strpos('AEIMQUYcgkosw048', right(parts[3], 1)) = 0 THEN
        RETURN NULL;
    END IF;
    -- Header and payload too have one spelling, as in Python: decode() ignores unused bits, so
    -- a last character carrying 4 (length 2 mod 4) or 2 (3 mod 4) of them must have them zero.
    FOREACH part IN ARRAY parts[1:2] LOOP
        IF (CASE octet_length(part) % 4 WHEN 0 THEN false WHEN 1 THEN true
                 WHEN 2 THEN strpos('AQgw', right(part, 1)) = 0
                 ELSE strpos('AEIMQUYcgkosw048', right(part, 1)) = 0 END) THEN
            RETURN NULL;
        END IF;
    END LOOP;
    -- Fast path: tenantgate writes one exact header per key, stored with the key.
    SELECT k.key_id, k.inner_pad, k.outer_pad INTO key_id, key_inner, key_outer
      FROM tenantgate.context_keys k
     WHERE k.header_b64 = parts[1] AND k.state = 'active';
    IF NOT FOUND THEN
        -- Any other header must still be a JSON object with alg HS256 and a known kid.
        header := convert_from(tenantgate._b64url(parts[1]), 'UTF8')::json;
        IF json_typeof(header) IS DISTINCT FROM 'object'
           OR json_typeof(header -> 'alg') IS DISTINCT FROM 'string'
           OR header ->> 'alg' <> 'HS256'
           OR json_typeof(header -> 'kid') IS DISTINCT FROM 'string' THEN
            RETURN NULL;
        END IF;
        SELECT k.key_id, k.inner_pad, k.outer_pad INTO key_id, key_inner, key_outer
          FROM tenantgate.context_keys k
         WHERE k.key_id = header ->> 'kid' AND k.state = 'active';
        IF NOT FOUND THEN
            RETURN NULL;
        END IF;
    END IF;
    -- HMAC-SHA256(key, m) = sha256(outer_pad || sha256(inner_pad || m)). IS DISTINCT FROM, not
    -- <>: with a NULL pad <> is NULL, and IF NULL accepted any signature (fail open).
    IF sha256(key_outer || sha256(key_inner || convert_to(parts[1] || '.' || parts[2], 'UTF8')))
       IS DISTINCT FROM tenantgate._b64url(parts[3]) THEN
        RETURN NULL;
    END IF;
    payload_text := convert_from(tenantgate._b64url(parts[2]), 'UTF8');
    -- Postgres text cannot hold NUL and its JSON operators fail on any \u0000 escape anywhere in
    -- the document. Parse with U+FFFD instead; subject and request id then come back NULL (the
    -- tenant pattern never admits NUL, and a tenant with U+FFFD in it is refused below).
    -- An escape is a backslash run of odd length before u0000: the text \u0000 (say in a
    -- client's x-request-id) is written \\u0000 and is no NUL. chr(92) is a backslash whatever
    -- standard_conforming_strings says.
    has_nul := strpos(payload_text, chr(92) || 'u0000') > 0
               AND payload_text ~ replace('(?<!B)(?:BB)*Bu0000', 'B', chr(92) || chr(92));
    IF has_nul THEN
        payload_text := regexp_replace(payload_text,
                                       replace('(?<!B)((?:BB)*)Bu0000', 'B', chr(92) || chr(92)),
                                       chr(92) || '1' || chr(92) || chr(92) || 'ufffd', 'g');
    END IF;
    payload := payload_text::json;
    IF json_typeof(payload) IS DISTINCT FROM 'object' THEN
        RETURN NULL;
    END IF;
    -- Each -> parses the document again: take every field once.
    tenant := payload -> 'tenant';
    subject := payload -> 'sub';
    request_id := payload -> 'rid';
    issued_at := payload -> 'iat';
    expires_at := payload -> 'exp';
    IF json_typeof(tenant) IS DISTINCT FROM 'string'
       OR json_typeof(subject) IS DISTINCT FROM 'string'
       OR json_typeof(request_id) IS DISTINCT FROM 'string'
       OR json_typeof(issued_at) IS DISTINCT FROM 'number'
       OR json_typeof(expires_at) IS DISTINCT FROM 'number'
       -- NumericDate must be a JSON integer: 1.0 or 1e3 are refused, as in Python.
       OR translate(issued_at::text, '.eE', '') <> issued_at::text
       OR translate(expires_at::text, '.eE', '') <> expires_at::text THEN
        RETURN NULL;
    END IF;
    claims.tenant := tenant #>> '{}';
    IF claims.tenant = '' OR (has_nul AND strpos(claims.tenant, chr(65533)) > 0)
       OR expires_at::text::numeric <= extract(epoch FROM statement_timestamp()) THEN
        RETURN NULL;
    END IF;
    claims.subject := CASE WHEN NOT has_nul THEN subject #>> '{}' END;
    claims.request_id := CASE WHEN NOT has_nul THEN request_id #>> '{}' END;
    claims.key_id := key_id;
    claims.expires_at := least(expires_at::text::numeric, 9223372036854775807)::bigint;
    RETURN claims;
EXCEPTION WHEN OTHERS THEN
    -- Bad base64, invalid UTF-8, invalid JSON, a huge number: fail closed.
    RETURN NULL;
END
$$;

-- The tenant of the context this transaction set with
-- set_config('tenantgate.context', <signed context>, true), or NULL.
CREATE OR REPLACE FUNCTION tenantgate.current_tenant() RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN (tenantgate.verify_context(current_setting('tenantgate.context', true))).tenant;
END
$$;

CREATE OR REPLACE FUNCTION tenantgate.current_subject() RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN (tenantgate.verify_context(current_setting('tenantgate.context', true))).subject;
END
$$;

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

-- Key management (tenantgate_admin only). The secret is bound as a parameter by the CLI; avoid
-- log_statement = 'all' / log_parameter_max_length on the session that runs these.
CREATE OR REPLACE FUNCTION tenantgate._fingerprint(secret bytea) RETURNS text
LANGUAGE sql IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT encode(sha256(tenantgate._pad(secret, 92)
                         || sha256(tenantgate._pad(secret, 54)
                                   || convert_to('tenantgate key fingerprint', 'UTF8'))), 'hex')
$$;

CREATE OR REPLACE FUNCTION tenantgate.add_key(key_id text, secret bytea, activate boolean DEFAULT true)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    existing tenantgate.context_keys;
    print    text;
BEGIN
    IF secret IS NULL OR octet_length(secret) < 32 THEN
        RAISE EXCEPTION 'tenantgate.add_key: the secret must be at least 32 bytes';
    END IF;
    print := tenantgate._fingerprint(secret);
    SELECT * INTO existing FROM tenantgate.context_keys k WHERE k.key_id = add_key.key_id
       FOR UPDATE;
    IF FOUND THEN
        IF existing.state = 'retired' THEN
            RAISE EXCEPTION 'tenantgate.add_key: key % was retired; key ids are never reused', key_id;
        ELSIF existing.fingerprint <> print THEN
            RAISE EXCEPTION 'tenantgate.add_key: key % exists with a different secret', key_id;
        ELSIF activate AND existing.state = 'pending' THEN
            UPDATE tenantgate.context_keys k SET state = 'active', activated_at = now()
             WHERE k.key_id = add_key.key_id;
            RETURN 'activated';
        END IF;
        RETURN 'unchanged';
    END IF;
    INSERT INTO tenantgate.context_keys (key_id, state, inner_pad, outer_pad, fingerprint,
                                         header_b64, activated_at)
    VALUES (key_id, CASE WHEN activate THEN 'active' ELSE 'pending' END,
            tenantgate._pad(secret, 54), tenantgate._pad(secret, 92), print,
            -- Same bytes as Python's compact json.dumps; key ids are [A-Za-z0-9_-] only.
            translate(encode(convert_to('{"alg":"HS256","kid":"' || key_id
                                        || '","typ":"tenant-context"}', 'UTF8'), 'base64'),
                      '+/=' || chr(10), '-_'),
            CASE WHEN activate THEN now() END);
    RETURN 'added';
END
$$;

CREATE OR REPLACE FUNCTION tenantgate.activate_key(key_id text) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    current_state text;
BEGIN
    SELECT k.state INTO current_state FROM tenantgate.context_keys k
     WHERE k.key_id = activate_key.key_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'tenantgate.activate_key: no key %', key_id;
    ELSIF current_state = 'retired' THEN
        RAISE EXCEPTION 'tenantgate.activate_key: key % was retired; add a new key id', key_id;
    ELSIF current_state = 'active' THEN
        RETURN 'unchanged';
    END IF;
    UPDATE tenantgate.context_keys k SET state = 'active', activated_at = now()
     WHERE k.key_id = activate_key.key_id;
    RETURN 'activated';
END
$$;

CREATE OR REPLACE FUNCTION tenantgate.retire_key(key_id text) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    current_state text;
BEGIN
    SELECT k.state INTO current_state FROM tenantgate.context_keys k
     WHERE k.key_id = retire_key.key_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'tenantgate.retire_key: no key %', key_id;
    ELSIF current_state = 'retired' THEN
        RETURN 'unchanged';
    END IF;
    -- Retiring erases the key material: a retired key can never verify again.
    UPDATE tenantgate.context_keys k
       SET state = 'retired', retired_at = now(), inner_pad = NULL, outer_pad = NULL
     WHERE k.key_id = retire_key.key_id;
    RETURN 'retired';
END
$$;

CREATE OR REPLACE FUNCTION tenantgate.list_keys()
RETURNS TABLE (key_id text, state text, fingerprint text, created_at timestamptz,
               activated_at timestamptz, retired_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT k.key_id, k.state, k.fingerprint, k.created_at, k.activated_at, k.retired_at
      FROM tenantgate.context_keys k ORDER BY k.created_at, k.key_id
$$;

-- Functions are executable by PUBLIC by default: close everything, then open what the
-- application needs.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA tenantgate FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenantgate.verify_context(text) TO PUBLIC;
GRANT EXECUTE ON FUNCTION tenantgate.current_tenant() TO PUBLIC;
GRANT EXECUTE ON FUNCTION tenantgate.current_subject() TO PUBLIC;
GRANT EXECUTE ON FUNCTION tenantgate.isolate(regclass, name) TO PUBLIC;
GRANT EXECUTE ON FUNCTION tenantgate.add_key(text, bytea, boolean) TO tenantgate_admin;
GRANT EXECUTE ON FUNCTION tenantgate.activate_key(text) TO tenantgate_admin;
GRANT EXECUTE ON FUNCTION tenantgate.retire_key(text) TO tenantgate_admin;
GRANT EXECUTE ON FUNCTION tenantgate.list_keys() TO tenantgate_admin;

INSERT INTO tenantgate.schema_version (version) VALUES (1) ON CONFLICT (version) DO NOTHING;

RESET ROLE;
