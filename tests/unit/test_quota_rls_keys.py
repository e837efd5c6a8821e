"""ShouldRateLimit bucket keys: bounded whatever the client's values, distinct for distinct ones."""

from __future__ import annotations

import hashlib

import pytest
from tenantgate.quota.rls import descriptor_bucket
from tenantgate.quota.rls_config import RlsLimit

LIMIT = RlsLimit("minute", 10)


def key(*entries: tuple[str, str]) -> str:
    return descriptor_bucket("edge", list(entries), LIMIT, "tenant").key


@pytest.mark.parametrize("value", ["é" * 400, "%" * 1000, "/" + "p" * 100_000, "€" * 300],
                         ids=["two_byte", "escaped_ascii", "long_path", "three_byte"])
def test_a_long_value_makes_a_short_key_in_the_tag_and_the_path(value: str) -> None:
    # The digest threshold was 1024 bytes before escaping, which can triple them: 800 bytes
    # of `é` made a 2.4 KB key (twice, with the tag), and the embedded store, degraded buckets
    # and the RESP cache count keys, not bytes.
    assert len(key(("path", value))) < 250
    assert len(key(("tenant", value), ("path", value))) < 400


def test_distinct_long_values_keep_distinct_keys() -> None:
    values = ["é" * 400, "é" * 399 + "e", "é" * 401, "x" * 200, "x" * 201, "y" + "x" * 199]
    assert len({key(("path", v)) for v in values}) == len(values)
    assert len({key(("tenant", v)) for v in values}) == len(values)


def test_a_value_spelling_a_digest_is_not_the_digested_value() -> None:
    long = "é" * 400
    digest = "#" + hashlib.sha256(long.encode()).hexdigest()
    assert key(("path", long)) != key(("path", digest))
    assert key(("path", long)) == key(("path", long))  # deterministic: one bucket per value


def test_a_short_value_is_kept_readable() -> None:
    assert key(("tenant", "acme"), ("path", "/a b")) == (
        "rl:{t:acme}:edge:tenant=acme|path=%2Fa%20b:60")
