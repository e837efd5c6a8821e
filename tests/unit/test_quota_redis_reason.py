"""The store-down warning's reason: quota/redis.py _secrets hands observe/store_errors.describe
every password of the quota's Redis settings (the URL's and `password`), so each is masked."""

from __future__ import annotations

import pytest
from tenantgate.config.quota import RedisConfig
from tenantgate.observe.store_errors import describe
from tenantgate.quota.redis import _secrets


def reason(url: str, said: str) -> str:
    return describe(ConnectionError(said), _secrets(RedisConfig.model_validate({"url": url})))


def test_the_urls_password_is_gathered_in_both_forms() -> None:
    # describe's own forms are tested with store_errors; here: what the quota store hands it.
    assert reason("redis://u:s3cr%2Fet@h:6379/0", "bad s3cr/et and s3cr%2Fet") == (
        "ConnectionError: bad *** and ***")
    assert reason("redis://h:6379/0?password=p%40ssword", "bad p@ssword") == (
        "ConnectionError: bad ***")


def test_the_password_setting_is_masked_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TG_TEST_REDIS_PASSWORD", "from-the-env")
    cfg = RedisConfig.model_validate({"url": "redis://h:6379/0",
                                      "password": {"fromEnv": "TG_TEST_REDIS_PASSWORD"}})
    assert describe(OSError("no from-the-env"), _secrets(cfg)) == "OSError: no ***"
