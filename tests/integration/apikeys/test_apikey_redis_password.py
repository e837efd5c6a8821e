"""The key store's Redis password as a secret reference (`api_keys.redis_password`), so it never
sits in the URL: it authenticates, and a wrong one fails closed."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from tenantgate.config.apikeys import ApiKeysConfig
from tenantgate.decision import Reason
from tenantgate.errors import ApiKeyStoreUnavailable
from tenantgate.identity.apikeys import ApiKeys, KeyRefusal, format_key, new_key_id
from tenantgate.testing.redis import RedisServer

PASSWORD = "correct-horse-battery-staple"


@pytest.fixture
def protected_url(redis_server: RedisServer) -> Iterator[str]:
    with redis.Redis(port=redis_server.port) as admin:
        admin.config_set("requirepass", PASSWORD)
    yield redis_server.url
    with redis.Redis(port=redis_server.port, password=PASSWORD) as authed:
        authed.config_set("requirepass", "")


def keys_for(url: str, password: str, directory: Path) -> ApiKeys:
    (directory / "hash.key").write_text("h" * 40)
    (directory / "redis.pw").write_text(password)
    cfg = ApiKeysConfig.model_validate(
        {"hash_secret": {"fromFile": "hash.key"}, "redis_url": url,
         "redis_password": {"fromFile": "redis.pw"}}, context={"base_dir": str(directory)})
    return ApiKeys(cfg, frozenset({"acme"}), None)


async def test_the_password_from_a_secret_reference_reaches_the_store(
        protected_url: str, tmp_path: Path) -> None:
    api_keys = keys_for(protected_url, PASSWORD, tmp_path)
    unknown = format_key("tgk", new_key_id(), secrets.token_urlsafe(32))
    try:
        refusal = KeyRefusal(Reason.API_KEY_INVALID, None)
        assert await api_keys.check(unknown) == refusal  # the store answered: no such key
    finally:
        await api_keys.close()


async def test_a_wrong_password_fails_closed(protected_url: str, tmp_path: Path) -> None:
    api_keys = keys_for(protected_url, "not-the-password", tmp_path)
    unknown = format_key("tgk", new_key_id(), secrets.token_urlsafe(32))
    try:
        with pytest.raises(ApiKeyStoreUnavailable):
            await api_keys.check(unknown)
    finally:
        await api_keys.close()


def test_a_password_in_both_places_is_refused(tmp_path: Path) -> None:
    (tmp_path / "hash.key").write_text("h" * 40)
    (tmp_path / "redis.pw").write_text(PASSWORD)
    with pytest.raises(ValueError, match="either in redis_url or as redis_password"):
        ApiKeysConfig.model_validate(
            {"hash_secret": {"fromFile": "hash.key"}, "redis_url": "redis://:pw@127.0.0.1:1/0",
             "redis_password": {"fromFile": "redis.pw"}}, context={"base_dir": str(tmp_path)})
