"""Exact-mode quota over TLS (`rediss://`) against a real TLS-only redis-server: the hot-path
connection (quota/pipe.py) verifies the server against the configured CA, and a server it
cannot verify fails the call closed instead of admitting it."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from tenantgate.config.quota import RedisConfig
from tenantgate.errors import QuotaStoreUnavailable
from tenantgate.quota.redis import RedisStore
from tenantgate.quota.store import Bucket
from tenantgate.testing.binaries import BinaryMissing, in_ci
from tenantgate.testing.pki import write_pki
from tenantgate.testing.redis import RedisServer, start_tls_server


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    tls_dir = tmp_path_factory.mktemp("redis-tls")
    write_pki(tls_dir)
    try:
        server = start_tls_server(tls_dir)
    except BinaryMissing as exc:
        # No wheel ships a redis-server with TLS: like PostgreSQL 15, these run where Debian's
        # is installed (CI's machines have it), and say why they did not run elsewhere. Only
        # a missing TLS build skips: any other start-up failure is raised, an error.
        if in_ci():
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    yield server
    server.close()


def store_for(url: str) -> RedisStore:
    return RedisStore(RedisConfig.model_validate({"url": url, "timeout": "2s"}))


def bucket(tenant: str, burst: int = 3) -> Bucket:
    return Bucket(f"tg:{{t:{tenant}}}:plan:1", "plan", burst, 86400.0, burst)


async def test_exact_quota_over_tls_admits_exactly_the_burst(tls_redis: RedisServer) -> None:
    tenant = f"acme-{secrets.token_hex(4)}"  # the server outlives one test (and one loop)
    store = store_for(tls_redis.url)
    try:
        assert store._pipe is not None  # the hot path, not redis-py's pooled connection
        admitted = [(await store.acquire([bucket(tenant)])).admitted for _ in range(5)]
    finally:
        await store.close()
    assert admitted == [True, True, True, False, False]
    assert tls_redis.tls_dir is not None
    with redis.Redis(port=tls_redis.port, ssl=True, socket_timeout=5,
                     ssl_ca_certs=str(tls_redis.tls_dir / "ca.crt")) as direct:
        assert direct.exists(bucket(tenant).key) == 1  # charged in Redis, not locally


async def test_a_server_the_ca_does_not_vouch_for_fails_closed(
        tls_redis: RedisServer, tmp_path: Path) -> None:
    other = write_pki(tmp_path)["ca"][0]  # a CA that never signed the server's certificate
    (tmp_path / "other-ca.crt").write_bytes(other)
    store = store_for(f"rediss://127.0.0.1:{tls_redis.port}/0"
                      f"?ssl_ca_certs={tmp_path / 'other-ca.crt'}")
    try:
        for tenant in ("acme", "globex"):
            with pytest.raises(QuotaStoreUnavailable):
                await store.acquire([bucket(tenant)])
    finally:
        await store.close()


async def test_plain_text_to_a_tls_port_fails_closed(tls_redis: RedisServer) -> None:
    store = store_for(f"redis://127.0.0.1:{tls_redis.port}/0")
    try:
        with pytest.raises(QuotaStoreUnavailable):
            await store.acquire([bucket("acme")])
    finally:
        await store.close()
