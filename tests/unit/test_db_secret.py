"""`tenantgate db add-key` reads a secret as the config loader does, so the key it installs in
Postgres is one a config can name, and a secret file as the config reads one, bounded, or from
a pipe (<(vault read ...), /dev/stdin), bounded too; never a device or a directory."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
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


@pytest.mark.parametrize("path", ["/dev/zero", "/dev/null", "/tmp"])
def test_a_secret_file_that_is_a_device_or_a_directory_is_refused_unopened(
        capsys: pytest.CaptureFixture[str], path: str) -> None:
    # /dev/zero, read to the end, grew until MemoryError.
    assert add_key_from_file(capsys, Path(path)) == (
        1, f"error: {path} is not a regular file or a pipe\n")


def add_key_from_stdin(secret: bytes) -> subprocess.CompletedProcess[str]:
    """db add-key --secret-file /dev/stdin, stdin a pipe with `secret`, in a process of its own;
    port 1: a secret read and accepted ends in a connection error."""
    return subprocess.run([sys.executable, "-m", "tenantgate.cli", "db", "add-key", "k",
                           "--secret-file", "/dev/stdin",
                           "--dsn", "host=127.0.0.1 port=1 connect_timeout=2"],
                          input=secret.decode(), capture_output=True, text=True, timeout=30)


def test_a_secret_piped_to_dev_stdin_is_read() -> None:
    # As --secret-file <(vault read ...): the secret is never on disk nor in the environment.
    done = add_key_from_stdin(b"k" * 40 + b"\n")
    assert (done.returncode, done.stderr.split(": connection to")[0]) == (
        1, "error: connection failed")


def test_a_piped_secret_larger_than_the_bound_is_refused() -> None:
    done = add_key_from_stdin(b"k" * (64 * 1024 + 1))
    assert (done.returncode, done.stderr) == (
        1, "error: /dev/stdin is larger than 64 KiB: not a secret\n")


def test_a_secret_from_a_pipe_or_a_fifo_is_read_stripped(tmp_path: Path) -> None:
    read, write = os.pipe()
    os.write(write, b"k" * 40 + b"\n")
    os.close(write)
    try:
        assert db._read_secret(argparse.Namespace(
            secret_env=None, secret_file=Path(f"/dev/fd/{read}"))) == b"k" * 40
    finally:
        os.close(read)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=fifo.write_bytes, args=[b"f" * 40], daemon=True)
    writer.start()
    try:
        assert db._read_secret(argparse.Namespace(secret_env=None, secret_file=fifo)) \
            == b"f" * 40
    finally:
        writer.join(timeout=30)


def test_a_secret_file_is_read_stripped(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"k" * 40 + b"\n")
    assert db._read_secret(argparse.Namespace(secret_env=None, secret_file=secret)) \
        == b"k" * 40
