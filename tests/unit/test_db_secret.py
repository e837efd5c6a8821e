"""`tenantgate db add-key` reads a secret as the config loader does, so the key it installs in
Postgres is one a config can name, and a secret file as the config reads one: bounded, and
never a device or FIFO."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tenantgate.cli import db, main


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


def add_key_from_file(capsys: pytest.CaptureFixture[str], path: Path) -> tuple[int, str]:
    # Port 1: were the file read as a secret, this would end in a connection error instead.
    code = main(["db", "add-key", "k", "--secret-file", str(path),
                 "--dsn", "host=127.0.0.1 port=1 connect_timeout=2"])
    return code, capsys.readouterr().err


def test_a_secret_file_larger_than_the_bound_is_refused_unread(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # Read whole and unbounded, a wrong path (a log, /dev/zero) could exhaust memory.
    big = tmp_path / "big"
    big.write_bytes(b"k" * (64 * 1024 + 1))
    assert add_key_from_file(capsys, big) == (
        1, f"error: {big} is larger than 64 KiB: not a secret\n")


def test_a_secret_file_that_is_a_device_is_refused_unopened(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert add_key_from_file(capsys, Path("/dev/null")) == (
        1, "error: /dev/null is not a regular file\n")


def test_a_secret_file_that_is_a_fifo_is_refused_without_waiting_for_a_writer(
        tmp_path: Path) -> None:
    # In a process of its own: opening a FIFO blocked until a writer came, forever here.
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    done = subprocess.run([sys.executable, "-m", "tenantgate.cli", "db", "add-key", "k",
                           "--secret-file", str(fifo)], capture_output=True, text=True,
                          timeout=30)
    assert (done.returncode, done.stdout, done.stderr) == (
        1, "", f"error: {fifo} is not a regular file\n")


def test_a_secret_file_is_read_stripped(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"k" * 40 + b"\n")
    assert db._read_secret(argparse.Namespace(secret_env=None, secret_file=secret)) \
        == b"k" * 40
