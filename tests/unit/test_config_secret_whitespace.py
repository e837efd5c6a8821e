"""A secret is the same bytes whether it comes fromEnv or fromFile: a file's surrounding
whitespace is stripped, a variable's is refused at load, naming the key path. Before, a
Kubernetes Secret made --from-file put a newline in the variable: the admin token then never
matched (every admin call UNAUTHENTICATED), and hash_secret differed between replicas reading
it from the environment and from a file."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest
import yaml
from tenantgate.admin.server import AdminTokenAuth
from tenantgate.config.load import parse_config
from tenantgate.config.model import Config
from tenantgate.errors import ConfigError

TOKEN = secrets.token_hex(24)


def load(tmp_path: Path, **overrides: dict[str, Any]) -> Config:
    (tmp_path / "context.key").write_text("c" * 40 + "\n")
    (tmp_path / "hash.key").write_text("h" * 40 + "\n")
    document: dict[str, Any] = {
        "context": {"active_key": "c1",
                    "keys": [{"id": "c1", "secret": {"fromFile": "context.key"}}]},
        "api_keys": {"hash_secret": {"fromFile": "hash.key"}},
        "admin": {"token": {"fromEnv": "TG_ADMIN_TOKEN"}},
    }
    for section, values in overrides.items():
        document[section] = {**document[section], **values}
    return parse_config(yaml.safe_dump(document), base_dir=tmp_path)


@pytest.mark.parametrize("value", [
    pytest.param(TOKEN + "\n", id="trailing-newline"),
    pytest.param(TOKEN + "\r\n", id="trailing-crlf"),
    pytest.param(" " + TOKEN, id="leading-space"),
    pytest.param(TOKEN + "\t", id="trailing-tab"),
])
def test_an_admin_token_variable_with_surrounding_whitespace_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("TG_ADMIN_TOKEN", value)
    with pytest.raises(ConfigError) as refused:
        load(tmp_path)
    assert refused.value.issues == [
        "admin.token: environment variable TG_ADMIN_TOKEN begins or ends with whitespace (a "
        "trailing newline?): remove it; a secret cannot begin or end with whitespace"]


@pytest.mark.parametrize(("section", "values", "path"), [
    pytest.param("api_keys", {"hash_secret": {"fromEnv": "TG_SECRET"}}, "api_keys.hash_secret",
                 id="hash-secret"),
    pytest.param("api_keys", {"redis_password": {"fromEnv": "TG_SECRET"}},
                 "api_keys.redis_password", id="redis-password"),
    pytest.param("context", {"keys": [{"id": "c1", "secret": {"fromEnv": "TG_SECRET"}}]},
                 "context.keys[0].secret", id="context-key"),
])
def test_every_secret_read_from_a_variable_is_refused_the_same_way(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, section: str,
        values: dict[str, Any], path: str) -> None:
    monkeypatch.setenv("TG_ADMIN_TOKEN", TOKEN)
    monkeypatch.setenv("TG_SECRET", "s" * 40 + "\n")
    with pytest.raises(ConfigError) as refused:
        load(tmp_path, **{section: values})
    assert refused.value.issues[:1] == [  # (an api_keys refused also refuses admin)
        f"{path}: environment variable TG_SECRET begins or ends with whitespace (a trailing "
        "newline?): remove it; a secret cannot begin or end with whitespace"]


def test_a_secret_is_the_same_bytes_from_a_variable_and_from_a_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TG_ADMIN_TOKEN", TOKEN)
    monkeypatch.setenv("TG_HASH_SECRET", "h" * 40)
    (tmp_path / "admin.token").write_text(TOKEN + "\n")  # as `echo $TOKEN > admin.token`
    from_env = load(tmp_path, api_keys={"hash_secret": {"fromEnv": "TG_HASH_SECRET"}})
    from_file = load(tmp_path, admin={"token": {"fromFile": "admin.token"}})
    assert from_env.admin is not None and from_file.admin is not None
    assert from_env.admin.token is not None and from_file.admin.token is not None
    assert from_env.admin.token.value == from_file.admin.token.value == TOKEN.encode()
    assert from_env.api_keys is not None and from_file.api_keys is not None
    assert from_env.api_keys.hash_secret.value == from_file.api_keys.hash_secret.value
    # What `tenantgate keys` presents (it strips its token too) is what the admin API expects.
    auth = AdminTokenAuth(from_env.admin.token.value)
    assert auth.authorized([("authorization", f"Bearer {TOKEN}")])
