"""The store-down warning's reason (quota/redis.py _secrets, observe/store_errors.describe):
every form of the password an error could echo is masked; one under 4 characters is not (it
would garble the message)."""

from __future__ import annotations

import pytest
from tenantgate.config.quota import RedisConfig
from tenantgate.observe.store_errors import describe
from tenantgate.quota.redis import _secrets


def reason(url: str, said: str) -> str:
    return describe(ConnectionError(said), _secrets(RedisConfig.model_validate({"url": url})))


@pytest.mark.parametrize(("url", "said", "expected"), [
    pytest.param("redis://u:s3cr%2Fet@h:6379/0", "bad s3cr/et here",
                 "ConnectionError: bad *** here", id="decoded-userinfo"),
    pytest.param("redis://u:s3cr%2Fet@h:6379/0", "bad s3cr%2Fet here",
                 "ConnectionError: bad *** here", id="percent-encoded-userinfo"),
    pytest.param("redis://h:6379/0?password=p%40ss+word", "bad p@ss word",
                 "ConnectionError: bad ***", id="query-decoded"),
    pytest.param("redis://h:6379/0?password=p%40ss+word", "bad p%40ss+word",
                 "ConnectionError: bad ***", id="query-as-written"),
    pytest.param("redis://u:abcd@h:6379/0", "abcd at abcde",
                 "ConnectionError: *** at ***e", id="four-characters-masked"),
    pytest.param("redis://u:abc@h:6379/0", "abc at abcde",
                 "ConnectionError: abc at abcde", id="three-characters-left"),
])
def test_the_password_is_masked_in_every_form(url: str, said: str, expected: str) -> None:
    assert reason(url, said) == expected


def test_the_password_setting_is_masked_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TG_TEST_REDIS_PASSWORD", "from-the-env")
    cfg = RedisConfig.model_validate({"url": "redis://h:6379/0",
                                      "password": {"fromEnv": "TG_TEST_REDIS_PASSWORD"}})
    assert describe(OSError("no from-the-env"), _secrets(cfg)) == "OSError: no ***"
