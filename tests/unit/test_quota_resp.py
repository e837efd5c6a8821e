"""The hand-encoded EVALSHA is exactly what redis-py would send for the same call."""

from __future__ import annotations

from redis.asyncio.connection import Connection
from tenantgate.quota.resp import command, evalsha


def test_evalsha_encoding_matches_redis_py_packing() -> None:
    sha = "a" * 40
    keys, args = ["tg:{t:acme}:plan:1", "tg:{t:acme}:ep:writes:60"], [1, 10_000, 200_000]
    ours = evalsha(sha.encode(), keys, args)
    theirs = b"".join(Connection().pack_command("EVALSHA", sha, len(keys), *keys, *args))
    assert ours == theirs


def test_non_ascii_keys_are_counted_in_bytes() -> None:
    ours = evalsha(b"s", ["tg:{t:é}"], [])
    assert b"$9\r\ntg:{t:\xc3\xa9}\r\n" in ours


def test_a_generic_command_matches_redis_py_packing() -> None:
    ours = command("AUTH", "tg-quota", "pässword", 7, b"\x00raw")
    theirs = b"".join(Connection().pack_command("AUTH", "tg-quota", "pässword", 7, b"\x00raw"))
    assert ours == theirs
