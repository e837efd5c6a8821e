"""`tenantgate db add-key` reads a secret as the config loader does, so the key it installs in
Postgres is one a config can name."""

from __future__ import annotations

import argparse

import pytest
from tenantgate.cli import db


@pytest.mark.parametrize("value", ["k" * 40 + "\n", " " + "k" * 40])
def test_a_variable_with_surrounding_whitespace_is_refused_as_the_config_refuses_it(
        monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    # Installed as is, it was a key no config could match: fromEnv refuses the value and
    # fromFile strips it.
    monkeypatch.setenv("NEW_KEY", value)
    with pytest.raises(db._Failure, match="NEW_KEY begins or ends with whitespace"):
        db._read_secret(argparse.Namespace(secret_env="NEW_KEY", secret_file=None))


def test_a_clean_variable_is_read_as_its_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEW_KEY", "k" * 40)
    assert db._read_secret(argparse.Namespace(secret_env="NEW_KEY", secret_file=None)) \
        == b"k" * 40
