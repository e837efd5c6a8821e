-- tenantgate schema, version 6: a context issued in the future is refused.
--
-- Up to version 5 nothing checked `iat`, so the clock set only the end of a context's life. With
-- Postgres's clock behind tenantgate's by more than the TTL, a context signed long ago was still
-- before its `exp` here: one leaked or logged was replayable for the TTL plus the lag. Now
-- verify_signed_context() also refuses an `iat` more than 30 seconds after clock_timestamp():
-- whatever the skew, a context is accepted for at most the TTL plus 30 s of Postgres's time, and
-- with Postgres more than 30 s behind, fresh contexts are refused (every tenant sees no rows:
-- fail closed and visible) rather than accepted late. tenantgate.context.CLOCK_SKEW_SECONDS
-- is the same allowance in Python's KeyRing.verify(). Idempotent, like the earlier versions.
--
-- The body is version 1's verifier (version 2 renamed it) with that one check added; the
-- wrapper verify_context() is unchanged.

SET ROLE tenantgate_owner;

-- Verify a signed tenant context (the compact HS256 JWS of tenantgate.context) and return its
-- claims, or NULL. Never raises: garbage, bad base64 or JSON, wrong types, an unknown, pending or
-- retired key, a bad signature, an expired context or one issued in the future all give NULL
-- (fail closed). Only verify_context() calls it.
CREATE OR REPLACE FUNCTION tenantgate.verify_signed_context(context text)
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
       OR expires_at::text::numeric <= extract(epoch FROM statement_timestamp())
       -- Issued more than 30 s ahead of this clock: one of the two clocks is wrong (see the
       -- top of this file). 30 s, as tenantgate's default JWT leeway: far above what NTP-synced
       -- hosts drift apart, and half the default TTL, so the longest a context is accepted
       -- stays within 1.5 times the default TTL.
       OR issued_at::text::numeric > extract(epoch FROM clock_timestamp()) + 30 THEN
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

REVOKE ALL ON FUNCTION tenantgate.verify_signed_context(text) FROM PUBLIC;

INSERT INTO tenantgate.schema_version (version) VALUES (6) ON CONFLICT (version) DO NOTHING;

RESET ROLE;
