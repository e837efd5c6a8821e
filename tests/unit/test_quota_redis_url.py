"""quota.redis.url query options: refused at load (key path named) unless the store uses them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tenantgate.config.apikeys import ApiKeysConfig
from tenantgate.config.load import parse_config
from tenantgate.config.quota import RedisConfig
from tenantgate.errors import ConfigError

FIXTURES = Path(__file__).parent.parent / "fixtures" / "config"
TLS_ONLY = "is a TLS option: it needs a rediss:// url"
NO_QUERY = ("a redis+sentinel:// or redis(s)+cluster:// url takes no ?options (they would be "
            "ignored): the database goes in the sentinel path (/master/db), the password in the "
            "url or in quota.redis.password")

MIN_VERSION = ("ssl_min_version must be the number of an ssl.TLSVersion (771 is TLSv1_2, 772 "
               "TLSv1_3), got {}")


@pytest.fixture(autouse=True)
def _context_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TG_TEST_CONTEXT_KEY", "k" * 64)


def issues(url: str) -> list[str]:
    try:
        parse_config((FIXTURES / "valid.yaml").read_text()
                     + f"quota:\n  store: redis\n  redis: {{url: '{url}'}}\n")
    except ConfigError as exc:
        return exc.issues
    return []


@pytest.mark.parametrize(("url", "problem"), [
    # Each passed check-config, then serve died with redis-py's TypeError or RedisError, or
    # every quota call failed the handshake (CLIENT SETNAME refuses spaces and controls).
    ("redis://h:6379/0?foo=bar", "unknown query option 'foo'"),
    ("redis://h?retry=x", "unknown query option 'retry'"),
    ("redis://h?credential_provider=x", "unknown query option 'credential_provider'"),
    ("redis://h?ssl_ca_certs=/x", f"'ssl_ca_certs' {TLS_ONLY}"),
    ("unix:///run/redis.sock?ssl_ca_certs=/x", f"'ssl_ca_certs' {TLS_ONLY}"),
    ("rediss://h?ssl_cert_reqs=bogus", "Invalid SSL Certificate Requirements Flag: bogus"),
    ("redis://h?protocol=4", "protocol must be either 2 or 3"),
    ("redis://h?client_name=a%20b", "client_name must be printable ASCII without spaces"),
    ("redis://h?client_name=a%0Ab", "client_name must be printable ASCII without spaces"),
    ("redis://h?client_name=%C3%A9", "client_name must be printable ASCII without spaces"),
    # redis-py builds the TLS context at each connection: every one of them failed, and a bad
    # version left a "Task exception was never retrieved" traceback per call.
    ("rediss://h?ssl_min_version=12", MIN_VERSION.format("12")),
    ("rediss://h?ssl_min_version=-3", MIN_VERSION.format("-3")),
    ("rediss://h?ssl_ciphers=bogus", "ssl_ciphers 'bogus' selects no cipher OpenSSL knows"),
    # connect() reads no query of these: a CA, a database or a password was silently dropped.
    ("redis+sentinel://h:26379/mymaster?db=2", NO_QUERY),
    ("redis+sentinel://h:26379/mymaster?password=x", NO_QUERY),
    ("rediss+cluster://h1:7000,h2:7001?ssl_ca_certs=/etc/ca.crt", NO_QUERY),
], ids=lambda v: v[:40])
def test_a_query_option_the_store_would_not_use_is_a_config_error(url: str,
                                                                   problem: str) -> None:
    assert issues(url) == [f"quota.redis.url: {problem}"]


@pytest.mark.parametrize("url", [
    "rediss://h:6380/0?ssl_ca_certs=/etc/ca.crt&ssl_cert_reqs=required",
    "rediss://h?ssl_certfile=/c&ssl_keyfile=/k&ssl_check_hostname=false",
    "redis://h?client_name=tenantgate-1&protocol=3&db=2",
    "unix:///run/redis.sock?db=3&client_name=tg&health_check_interval=5",
    "redis://h?socket_keepalive=true",
    "rediss://h?ssl_min_version=771&ssl_ciphers=ECDHE%2BAESGCM",
    "rediss://h?ssl_min_version=-1",  # MAXIMUM_SUPPORTED
])
def test_query_options_the_store_uses_still_pass(url: str) -> None:
    assert issues(url) == []


def console_script() -> str:
    found = Path(sys.executable).parent / "tenantgate"
    return str(found) if found.exists() else shutil.which("tenantgate") or "tenantgate"


@pytest.mark.parametrize("query", ["foo=bar", "ssl_ca_certs=/x", "client_name=a%20b"])
def test_check_config_exits_2_naming_the_key_path(tmp_path: Path, query: str) -> None:
    config = tmp_path / "tenantgate.yaml"
    config.write_text((FIXTURES / "valid.yaml").read_text()
                      + f"quota:\n  store: redis\n  redis: {{url: 'redis://h?{query}'}}\n")
    result = subprocess.run([console_script(), "check-config", str(config)], capture_output=True,
                            text=True, timeout=60,
                            env={**os.environ, "TG_TEST_CONTEXT_KEY": "k" * 64})
    assert result.returncode == 2
    assert result.stderr.startswith(f"{config}: quota.redis.url: ")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("url", ["redis://h/0?password=inline", "redis://:inline@h/0",
                                 "unix:///run/redis.sock?password=inline"])
def test_a_password_in_the_url_and_as_a_secret_is_refused_for_either_store(
        url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # redis-py takes the url's password (`?password=` too) over the one it is given: the
    # secret was silently ignored.
    monkeypatch.setenv("TG_TEST_REDIS_PASSWORD", "from-the-secret")
    (tmp_path / "hash.key").write_text("h" * 40)
    with pytest.raises(ValueError, match="either in url or as password, not both"):
        RedisConfig.model_validate({"url": url, "password": {"fromEnv": "TG_TEST_REDIS_PASSWORD"}})
    with pytest.raises(ValueError, match="either in redis_url or as redis_password, not both"):
        ApiKeysConfig.model_validate(
            {"hash_secret": {"fromFile": "hash.key"}, "redis_url": url,
             "redis_password": {"fromEnv": "TG_TEST_REDIS_PASSWORD"}},
            context={"base_dir": str(tmp_path)})


@pytest.mark.parametrize("url", [
    "redis://:Sup3rSecretTok/en@h:6379/0", "redis://:pa?ssw0rd@h:6379/0",
    "rediss://user:pa#ssw0rd@h:6380/0", "redis+sentinel://:Sup3r/Secret@h:26379/mymaster",
    # A "?" then an "=" in the password: the rest reads as a query value, which may hold "@".
    "redis://:Sup3r?token=Tok@h:6379/0", "redis://:Sup3r/c?d=Tok@h:6379/0",
    "redis+sentinel://:Sup3r?x=Tok@s1:26379/mymaster", "redis://:6379?password=Sup3rTok@h/0"])
def test_a_password_ending_the_host_part_early_is_refused_without_echoing_it(url: str) -> None:
    # An access key with "/" (base64) passed unencoded: the host part ended at the "/", and the
    # error quoted the start of the password as the port ("port 'Sup3rSecretTok' ...").
    [problem] = issues(url)
    assert problem.startswith("quota.redis.url: the credentials before '@' hold a character")
    assert "percent-encode the password" in problem
    assert not any(part in problem for part in ("Sup3r", "pa?", "pa#", "Tok"))


@pytest.mark.parametrize("url", [
    "redis://:Sup3rSecretTok%2Fen@h:6379/0", "redis://h:6379/0?client_name=me@x",
    "unix://:p@/run/re@dis.sock", "redis://[::1]:6379/0?client_name=a@b",
    "rediss://h:6380/0?ssl_ca_certs=/p/with@sign", "redis+cluster://u:p@h1:7000,h2:7001"])
def test_an_at_sign_where_one_may_be_is_accepted(url: str) -> None:
    assert issues(url) == []
