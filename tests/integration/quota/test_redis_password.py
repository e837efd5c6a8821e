"""A Redis password given as a secret reference authenticates; without it Redis refuses."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from tenantgate.config.quota import RedisConfig
from tenantgate.errors import QuotaStoreUnavailable
from tenantgate.quota.redis import RedisStore
from tenantgate.quota.store import Bucket
from tenantgate.testing.redis import RedisServer

PASSWORD = "correct-horse-battery-staple"


@pytest.fixture
def protected_redis(fresh_redis: RedisServer) -> Iterator[RedisServer]:
    admin = redis.Redis(port=fresh_redis.port)
    admin.config_set("requirepass", PASSWORD)
    yield fresh_redis
    authed = redis.Redis(port=fresh_redis.port, password=PASSWORD)
    authed.config_set("requirepass", "")
    authed.close()
    admin.close()


def _bucket() -> Bucket:
    return Bucket("tg:{t:acme}:plan:1", "plan", 10, 1.0, 10)


async def test_password_from_a_secret_reference_authenticates(
        protected_redis: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TG_TEST_REDIS_PASSWORD", PASSWORD)
    cfg = RedisConfig.model_validate(
        {"url": protected_redis.url, "password": {"fromEnv": "TG_TEST_REDIS_PASSWORD"}})
    store = RedisStore(cfg)
    try:
        outcome = await store.acquire([_bucket()])
    finally:
        await store.close()
    assert outcome.admitted


async def test_without_the_password_the_store_is_unavailable(
        protected_redis: RedisServer) -> None:
    store = RedisStore(RedisConfig.model_validate({"url": protected_redis.url}))
    try:
        with pytest.raises(QuotaStoreUnavailable):
            await store.acquire([_bucket()])
    finally:
        await store.close()


def test_a_password_in_both_url_and_secret_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TG_TEST_REDIS_PASSWORD", PASSWORD)
    with pytest.raises(ValueError, match="either in url or as password"):
        RedisConfig.model_validate({"url": "redis://:inline@127.0.0.1:6379/0",
                                    "password": {"fromEnv": "TG_TEST_REDIS_PASSWORD"}})
