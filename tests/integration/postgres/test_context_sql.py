"""tenantgate.current_tenant()/verify_context() agree with the Python signer and fail closed."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import string
import time
from collections.abc import Callable

import psycopg
import pytest
from pgsupport import ACTIVE_SECRET, LONG_SECRET, Database
from tenantgate.cli import main
from tenantgate.context import CLOCK_SKEW_SECONDS, InvalidContext, KeyRing, b64url
from tenantgate.db import schema

TENANT_CHARS = string.ascii_lowercase + string.digits + "_-"
B64URL_CHARS = string.ascii_letters + string.digits + "-_"
SUBJECT_CHARS = string.printable + "é€漢字🙂'\"\\\u2028\ufeff\x7f"


def verify_sql(conn: psycopg.Connection, tokens: list[str]) -> list[tuple[str | None, ...]]:
    rows = conn.execute(
        "SELECT (c).tenant, (c).subject, (c).request_id, (c).key_id FROM ("
        " SELECT tenantgate.verify_context(t) AS c, o FROM unnest(%s::text[]) WITH ORDINALITY"
        " AS u(t, o)) v ORDER BY o", [tokens]).fetchall()
    return [tuple(r) for r in rows]


def verify_python(ring: KeyRing, token: str) -> tuple[str | None, ...]:
    try:
        claims = ring.verify(token)
    except InvalidContext:
        return (None, None, None, None)
    return (claims.tenant, claims.subject, claims.request_id, claims.key_id)


def sign_raw(key_id: str, secret: bytes, payload: object, header: object = None) -> str:
    """A correctly signed token with any header/payload: tests the claim checks, not the MAC."""
    head = header if header is not None else {"alg": "HS256", "kid": key_id,
                                              "typ": "tenant-context"}
    text = (f"{b64url(json.dumps(head, separators=(',', ':')).encode())}."
            f"{b64url(json.dumps(payload, separators=(',', ':')).encode())}")
    mac = hmac.new(secret, text.encode(), hashlib.sha256).digest()
    return f"{text}.{b64url(mac)}"


def tamper(rng: random.Random, token: str, others: list[str]) -> str:
    head, body, sig = token.split(".")
    kind = rng.randrange(6)
    if kind == 0:  # flip one character anywhere
        i = rng.randrange(len(token))
        if token[i] == ".":
            return token[:i]
        return token[:i] + rng.choice(B64URL_CHARS.replace(token[i], "")) + token[i + 1:]
    if kind == 1:  # truncate
        return token[:rng.randrange(len(token))]
    if kind == 2:  # another token's payload under this signature
        return f"{head}.{rng.choice(others).split('.')[1]}.{sig}"
    if kind == 3:  # signature stripped or emptied
        return rng.choice([f"{head}.{body}", f"{head}.{body}.", f"{head}.{body}.{sig[:-1]}"])
    if kind == 4:  # alg downgraded, signature kept
        header = json.loads(base64.urlsafe_b64decode(head + "=="))
        header["alg"] = rng.choice(["none", "HS512", "hs256", "RS256"])
        return f"{b64url(json.dumps(header, separators=(',', ':')).encode())}.{body}.{sig}"
    return token + rng.choice(["", ".", "x", ".e30"])


def random_contexts(rng: random.Random, db: Database, count: int) -> list[str]:
    unknown_id = rand_key_id(rng)
    wrong_secret = KeyRing({"active": b"not-the-active-secret-0123456789abcdef"}, "active")
    unknown = KeyRing({unknown_id: rng.randbytes(rng.randrange(32, 130))}, unknown_id)
    # Mostly keys Postgres accepts; the rest retired, pending, wrong secret or unknown.
    rings = [db.ring, db.long_key_ring] * 4 + [db.retired_ring, db.pending_ring, wrong_secret,
                                               unknown]
    tokens: list[str] = []
    signed: list[str] = []
    for _ in range(count):
        tenant = "".join(rng.choices(TENANT_CHARS, k=rng.randrange(1, 64)))
        subject = "".join(rng.choices(SUBJECT_CHARS, k=rng.randrange(0, 40)))
        # Expired, or issued well ahead of the verifiers' clock (a signer's clock running
        # fast): both must be refused, whatever the TTL.
        shift = rng.choices([0, -7200, rng.randrange(120, 3600)], weights=[75, 15, 10])[0]
        token = rng.choice(rings).sign(tenant, subject, f"rid-{rng.randrange(10**9)}",
                                       ttl=rng.randrange(60, 3600), now=time.time() + shift)
        signed.append(token)
        tokens.append(tamper(rng, token, signed) if rng.random() < 0.3 else token)
    return tokens


def rand_key_id(rng: random.Random) -> str:
    return "".join(rng.choices(B64URL_CHARS, k=rng.randrange(1, 33)))


def test_sql_and_python_agree_on_thousands_of_random_contexts(db: Database) -> None:
    tokens = random_contexts(random.Random(20240605), db, 3000)
    python_ring = KeyRing({"active": ACTIVE_SECRET, "long": LONG_SECRET}, "active")
    with db.connect() as conn:
        sql = verify_sql(conn, tokens)
    expected = [verify_python(python_ring, t) for t in tokens]
    disagreements = [(t, s, e) for t, s, e in zip(tokens, sql, expected, strict=True) if s != e]
    assert disagreements == []
    accepted = sum(1 for e in expected if e[0] is not None)
    assert 1000 < accepted < 2900  # the mix really exercises both outcomes


def _payload(now: int, **overrides: object) -> dict[str, object]:
    payload: dict[str, object] = {"tenant": "acme", "sub": "alice", "iat": now,
                                  "exp": now + 60, "rid": "r1"}
    payload.update(overrides)
    return {k: v for k, v in payload.items() if v is not _DROP}


def _exponent_form(now: int) -> str:
    # 1e12 is a JSON number but not an integer; json.dumps cannot write it, so build the text.
    body = f'{{"tenant":"acme","sub":"alice","iat":{now},"exp":1e12,"rid":"r1"}}'
    head = b64url(b'{"alg":"HS256","kid":"active","typ":"tenant-context"}')
    text = f"{head}.{b64url(body.encode())}"
    return f"{text}.{b64url(hmac.new(ACTIVE_SECRET, text.encode(), 'sha256').digest())}"


def _signed(payload: object) -> str:
    return sign_raw("active", ACTIVE_SECRET, payload)


_DROP = object()
# Each case builds its token from the time the test runs, never from collection time: a token
# that had expired by then would be refused whatever the claim checks do.
_SIGNED_BUT_INVALID: dict[str, Callable[[int], str]] = {
    "exp_as_float": lambda now: _signed(_payload(now, exp=now + 60.0)),
    "exp_in_exponent_form": _exponent_form,
    "exp_as_string": lambda now: _signed(_payload(now, exp=str(now + 60))),
    "iat_as_bool": lambda now: _signed(_payload(now, iat=True)),
    "tenant_as_number": lambda now: _signed(_payload(now, tenant=7)),
    "tenant_empty": lambda now: _signed(_payload(now, tenant="")),
    "tenant_missing": lambda now: _signed(_payload(now, tenant=_DROP)),
    "sub_null": lambda now: _signed(_payload(now, sub=None)),
    "rid_missing": lambda now: _signed(_payload(now, rid=_DROP)),
    "expired_one_second_ago": lambda now: _signed(_payload(now, exp=now - 1)),
    "issued_a_minute_ahead": lambda now: _signed(_payload(now, iat=now + 60, exp=now + 120)),
    "payload_is_array": lambda now: _signed(["acme"]),
    "payload_is_string": lambda now: _signed("acme"),
}


@pytest.mark.parametrize("case", sorted(_SIGNED_BUT_INVALID))
def test_correctly_signed_context_with_bad_claims_gives_null(db: Database, case: str) -> None:
    now = int(time.time())
    token = _SIGNED_BUT_INVALID[case](now)
    control = _signed(_payload(now))  # the same moment with nothing wrong: must verify
    valid = ("acme", "alice", "r1", "active")
    with db.connect() as conn:
        assert verify_sql(conn, [control, token]) == [valid, (None, None, None, None)]
    assert verify_python(db.ring, control) == valid
    assert verify_python(db.ring, token) == (None, None, None, None)


_GARBAGE = ["", ".", "..", "a.b.c", "x" * 5000, "\u00e9.\u00e9.\u00e9", "\\x00", "null", "{}",
            "e30.e30.", "e30.e30." + "A" * 43, "=.=.=", "a=.b=.c=", "Zm9v.YmFy.YmF6",
            "\U0001f600" * 3, "' OR 1=1 --", "e30.e30." + "_" * 43 + "'", "%00", "\t.\n.\r"]


@pytest.mark.parametrize("garbage", _GARBAGE, ids=range(len(_GARBAGE)))
def test_garbage_context_gives_null_and_never_raises(db: Database, garbage: str) -> None:
    with db.connect() as conn, conn.transaction():
        conn.execute("SELECT set_config('tenantgate.context', %s, true)", [garbage])
        row = conn.execute("SELECT tenantgate.current_tenant(), tenantgate.current_subject()")
        assert row.fetchone() == (None, None)


def test_signature_with_non_canonical_header_key_order_is_still_verified(db: Database) -> None:
    # The MAC covers the header text as sent; both verifiers accept any JSON key order.
    token = sign_raw("active", ACTIVE_SECRET, _payload(int(time.time())),
                     header={"typ": "tenant-context", "kid": "active", "alg": "HS256"})
    with db.connect() as conn:
        assert verify_sql(conn, [token])[0][0] == "acme"
    assert verify_python(db.ring, token)[0] == "acme"


def test_subject_escaping_nul_comes_back_null_but_tenant_still_verifies(db: Database) -> None:
    token = db.ring.sign("acme", "ali\x00ce", "r", 60)
    with db.connect() as conn:
        tenant, subject, _, _ = verify_sql(conn, [token])[0]
    assert (tenant, subject) == ("acme", None)


def test_key_longer_than_hmac_block_is_hashed_first(db: Database) -> None:
    assert len(LONG_SECRET) > 64
    token = db.long_key_ring.sign("acme", "alice", "r", 60)
    with db.connect() as conn:
        assert verify_sql(conn, [token]) == [("acme", "alice", "r", "long")]


@pytest.mark.parametrize("ring_name", ["retired_ring", "pending_ring"])
def test_retired_or_pending_key_is_refused(db: Database, ring_name: str) -> None:
    token = getattr(db, ring_name).sign("acme", "alice", "r", 60)
    with db.connect() as conn:
        assert verify_sql(conn, [token]) == [(None, None, None, None)]


def test_functions_are_stable_security_definer_with_fixed_search_path(db: Database) -> None:
    with db.connect() as conn:
        rows = conn.execute(
            "SELECT p.proname, p.provolatile, p.prosecdef, p.proconfig, r.rolname"
            " FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner"
            " WHERE p.pronamespace = 'tenantgate'::regnamespace"
            " AND p.proname IN ('current_tenant', 'current_subject', 'verify_context')"
            " ORDER BY 1").fetchall()
    assert [r[0] for r in rows] == ["current_subject", "current_tenant", "verify_context"]
    for _, volatility, definer, config, owner in rows:
        assert (volatility, definer, owner) == ("s", True, "tenantgate_owner")
        assert config == ["search_path=pg_catalog, pg_temp"]


def test_non_canonical_signature_spelling_is_refused_by_sql_and_python(db: Database) -> None:
    # The last of 43 characters carries two unused bits; flipping one keeps the decoded bytes.
    token = db.ring.sign("acme", "alice", "r", 60)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    twin = token[:-1] + alphabet[alphabet.index(token[-1]) ^ 1]
    with db.connect() as conn:
        assert verify_sql(conn, [token, twin]) == [("acme", "alice", "r", "active"),
                                                   (None, None, None, None)]
    assert verify_python(db.ring, twin)[0] is None


@pytest.mark.parametrize("request_id", ["\\u0000", "x\\\\u0000", "\\\\\\\\u0000\\u0000"],
                         ids=["one_backslash", "two_backslashes", "four_then_one"])
def test_text_spelling_backslash_u0000_is_not_a_nul(db: Database, request_id: str) -> None:
    # x-request-id comes from the client: the text \u0000 is written as \\u0000 in JSON, which is
    # no NUL escape. Seen as one, it made current_subject() NULL (created_by left blank).
    token = db.ring.sign("acme", "alice", request_id, 60)
    with db.connect() as conn:
        assert verify_sql(conn, [token]) == [("acme", "alice", request_id, "active")]
    assert verify_python(db.ring, token) == ("acme", "alice", request_id, "active")


def test_nul_after_an_escaped_backslash_is_still_a_nul(db: Database) -> None:
    token = db.ring.sign("acme", "alice", "\\\x00", 60)  # JSON: "\\\u0000"
    with db.connect() as conn:
        assert verify_sql(conn, [token]) == [("acme", None, None, "active")]


def test_active_key_with_a_missing_pad_verifies_nothing(fresh_db: Database) -> None:
    # The table's CHECK only ties *both* pads being NULL to `retired`; a row damaged by hand or
    # a restore with one NULL pad made the MAC comparison NULL, which is not "different".
    forged = fresh_db.ring.sign("globex", "s", "r", 60).rsplit(".", 1)[0] + "." + "A" * 43
    with psycopg.connect(fresh_db.dsn(), autocommit=True) as conn:
        conn.execute("UPDATE tenantgate.context_keys SET inner_pad = NULL WHERE key_id = 'active'")
        assert verify_sql(conn, [forged]) == [(None, None, None, None)]


_B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@pytest.mark.parametrize(("part", "length_mod_4"), [(0, 2), (0, 3), (1, 2), (1, 3)],
                         ids=["header_4_spare_bits", "header_2_spare_bits",
                              "payload_4_spare_bits", "payload_2_spare_bits"])
def test_non_canonical_header_or_payload_spelling_is_refused_by_sql_and_python(
        db: Database, part: int, length_mod_4: int) -> None:
    # Signed as spelled, so only a key holder can make one: still, one context, one spelling.
    def spelled(text: str) -> str:  # JSON allows trailing spaces: pad to the wanted length
        while len(b64url(text.encode())) % 4 != length_mod_4:
            text += " "
        return b64url(text.encode())
    # Not the stored header, so Postgres takes its JSON path.
    texts = ['{"alg":"HS256","kid":"active"}',
             json.dumps(_payload(int(time.time())), separators=(",", ":"))]
    parts = [b64url(text.encode()) for text in texts]
    parts[part] = spelled(texts[part])
    parts[part] = parts[part][:-1] + _B64URL[_B64URL.index(parts[part][-1]) | 1]
    text = ".".join(parts)
    token = f"{text}.{b64url(hmac.new(ACTIVE_SECRET, text.encode(), 'sha256').digest())}"
    with db.connect() as conn:
        assert verify_sql(conn, [token]) == [(None, None, None, None)]
    assert verify_python(db.ring, token) == (None, None, None, None)


def test_context_issued_beyond_the_clock_skew_allowance_is_refused_by_sql_and_python(
        db: Database) -> None:
    # Signed by a tenantgate whose clock runs ahead of Postgres's (Postgres behind): 3600 s ahead
    # and signed 3000 s ago by that clock, the context's exp is still ahead of Postgres's clock,
    # and up to schema version 5 it verified: replayable for the TTL plus the lag.
    now = time.time()
    old_leaked = db.ring.sign("acme", "alice", "r", 60, now=now + 3600 - 3000)
    fresh_from_fast_signer = db.ring.sign("acme", "alice", "r", 60, now=now + 3600)
    beyond = db.ring.sign("acme", "alice", "r", 60, now=now + CLOCK_SKEW_SECONDS + 5)
    within = db.ring.sign("acme", "alice", "r", 60, now=now + CLOCK_SKEW_SECONDS - 5)
    tokens = [old_leaked, fresh_from_fast_signer, beyond, within]
    refused, valid = (None, None, None, None), ("acme", "alice", "r", "active")
    with db.connect() as conn:
        assert verify_sql(conn, tokens) == [refused, refused, refused, valid]
    assert [verify_python(db.ring, t) for t in tokens] == [refused, refused, refused, valid]


def test_db_install_upgrades_a_version_5_database_to_the_issued_at_check(
        fresh_db: Database, capsys: pytest.CaptureFixture[str]) -> None:
    with psycopg.connect(fresh_db.cluster.dsn(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE before_issued_at_check")
    dsn = fresh_db.cluster.dsn(dbname="before_issued_at_check")
    future = sign_raw("k", ACTIVE_SECRET, _payload(int(time.time()) + 600))
    with psycopg.connect(dsn, autocommit=True) as conn:
        for migration in schema.migrations():
            if migration.version <= 5:  # what the previous release installed
                conn.execute(migration.sql)
        conn.execute("SELECT tenantgate.add_key('k', %s)", [ACTIVE_SECRET])
        assert verify_sql(conn, [future])[0][0] == "acme"  # the gap version 6 closes
    assert main(["db", "install", "--dsn", dsn]) == 0
    assert capsys.readouterr().out == (
        f"tenantgate SQL at schema version {schema.latest_version()} (was 5)\n")
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert verify_sql(conn, [future]) == [(None, None, None, None)]
        public = conn.execute(
            "SELECT has_function_privilege('public', 'tenantgate.verify_signed_context(text)',"
            " 'EXECUTE'), has_function_privilege('public', 'tenantgate.verify_context(text)',"
            " 'EXECUTE')")
        assert public.fetchone() == (False, True)
