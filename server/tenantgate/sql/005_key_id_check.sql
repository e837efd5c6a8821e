-- tenantgate schema, version 5: the key functions keep key material out of the server log.
--
-- Version 1's add_key() checked a key id only through the table's CHECK. A bad one (too long,
-- holding a `.`, NULL) failed the INSERT, and the error's DETAIL "Failing row contains (...)"
-- showed the row, padded key forms included (the function runs as tenantgate_owner, which may
-- read them): PostgreSQL writes that DETAIL to the server log, and anyone reading the log could
-- recover the key and sign a context for any tenant. The key id is now checked before the row
-- is built, and a constraint violation while add_key() or activate_key() writes reaches the
-- caller and the log without its DETAIL (retire_key() writes NULL pads: its row holds none).
-- Idempotent, like the earlier versions.

SET ROLE tenantgate_owner;

-- The rule for key ids, as in the table's CHECK and tenantgate's config (ContextKey.id).
CREATE OR REPLACE FUNCTION tenantgate._valid_key_id(key_id text) RETURNS boolean
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT key_id IS NOT NULL AND key_id ~ '^[A-Za-z0-9_-]{1,32}$'
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
    -- The id is not echoed: a secret passed in its place would reach the log.
    IF NOT tenantgate._valid_key_id(key_id) THEN
        RAISE EXCEPTION 'tenantgate.add_key: a key id must be 1 to 32 characters, each a letter '
            'A-Z or a-z, a digit, _ or -' USING ERRCODE = 'invalid_parameter_value';
    END IF;
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
EXCEPTION WHEN integrity_constraint_violation THEN
    -- A constraint's DETAIL is the failing row, pads included (see above); its message names
    -- only the relation and constraint. An error caught here is not logged, the re-raise is.
    RAISE EXCEPTION USING ERRCODE = SQLSTATE, MESSAGE = 'tenantgate.add_key: ' || SQLERRM;
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
EXCEPTION WHEN integrity_constraint_violation THEN
    -- The updated row holds the pads: as in add_key(), no DETAIL.
    RAISE EXCEPTION USING ERRCODE = SQLSTATE, MESSAGE = 'tenantgate.activate_key: ' || SQLERRM;
END
$$;

REVOKE ALL ON FUNCTION tenantgate._valid_key_id(text) FROM PUBLIC;

INSERT INTO tenantgate.schema_version (version) VALUES (5) ON CONFLICT (version) DO NOTHING;

RESET ROLE;
