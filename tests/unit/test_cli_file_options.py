"""The CLI's file options (`keys --token-file/--ca/--cert/--key`, `token mint --key`,
`db add-key --secret-file`) read a regular file or a pipe, bounded, and never a device or a
directory: /dev/zero, read whole, was a MemoryError traceback or the OOM killer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from tenantgate.cli import main
from tenantgate.testing import tokens

PEM_LIMIT = 1024 * 1024
TOKEN_LIMIT = 64 * 1024


def keys_list(*options: str) -> int:
    # Port 9: a token and TLS files read and accepted end in UNAVAILABLE, exit 1.
    return main(["keys", "--admin", "127.0.0.1:9", *options, "list", "--tenant", "acme"])


def mint(key: str | Path) -> int:
    return main(["token", "mint", "--key", str(key), "--iss", "i", "--aud", "a",
                 "--tenant", "acme"])


@pytest.fixture
def pem_files(tmp_path: Path) -> dict[str, Path]:
    from tenantgate.testing.pki import write_pki

    write_pki(tmp_path)
    return {"--ca": tmp_path / "ca.crt", "--cert": tmp_path / "client.crt",
            "--key": tmp_path / "client.key"}


@pytest.mark.parametrize("unfit", ["/dev/zero", "/dev/null", "/"])
@pytest.mark.parametrize("option", ["--token-file", "--ca", "--cert", "--key"])
def test_keys_refuses_a_device_or_a_directory_unread(
        option: str, unfit: str, pem_files: dict[str, Path],
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TG_ADMIN_TOKEN", "t0ken")
    token = [] if option == "--token-file" else ["--token-env", "TG_ADMIN_TOKEN"]
    pair = {"--cert": ["--key"], "--key": ["--cert"]}.get(option, [])  # they go together
    others = [word for name in pair for word in (name, str(pem_files[name]))]
    assert (keys_list(*token, *others, option, unfit), capsys.readouterr().err) == (
        2, f"tenantgate keys: {unfit} is not a regular file or a pipe\n")


@pytest.mark.parametrize(("option", "limit", "what"), [
    ("--token-file", TOKEN_LIMIT, "64 KiB: not an admin token"),
    ("--ca", PEM_LIMIT, "1024 KiB: not a PEM certificate"),
])
def test_keys_refuses_a_file_larger_than_the_bound(
        option: str, limit: int, what: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TG_ADMIN_TOKEN", "t0ken")
    big = tmp_path / "big"
    big.write_bytes(b"t" * (limit + 1))
    token = [] if option == "--token-file" else ["--token-env", "TG_ADMIN_TOKEN"]
    assert (keys_list(*token, option, str(big)), capsys.readouterr().err) == (
        2, f"tenantgate keys: {big} is larger than {what}\n")


def test_keys_reads_the_token_from_a_pipe(capsys: pytest.CaptureFixture[str]) -> None:
    # As --token-file <(vault read ...): read, sent, and refused by no server on port 9.
    read, write = os.pipe()
    os.write(write, b"t0ken\n")
    os.close(write)
    try:
        assert keys_list("--token-file", f"/dev/fd/{read}") == 1
    finally:
        os.close(read)
    assert capsys.readouterr().err.startswith("tenantgate keys: UNAVAILABLE: ")


def test_keys_reads_tls_files_from_pipes(pem_files: dict[str, Path],
                                         capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TG_ADMIN_TOKEN", "t0ken")
    options, ends = ["--token-env", "TG_ADMIN_TOKEN"], []
    for option, path in pem_files.items():
        read, write = os.pipe()
        os.write(write, path.read_bytes())  # a few KiB: within the pipe's buffer
        os.close(write)
        ends.append(read)
        options += [option, f"/dev/fd/{read}"]
    try:
        assert keys_list(*options) == 1
    finally:
        for read in ends:
            os.close(read)
    assert capsys.readouterr().err.startswith("tenantgate keys: UNAVAILABLE: ")


@pytest.mark.parametrize("unfit", ["/dev/zero", "/dev/null", "/"])
def test_token_mint_refuses_a_device_or_a_directory_as_key(
        unfit: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert (mint(unfit), capsys.readouterr().err) == (
        1, f"tenantgate token: cannot load key: {unfit} is not a regular file or a pipe\n")


def test_token_mint_refuses_a_key_file_larger_than_the_bound(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    big = tmp_path / "big.pem"
    big.write_bytes(b"k" * (PEM_LIMIT + 1))
    assert (mint(big), capsys.readouterr().err) == (
        1, f"tenantgate token: cannot load key: {big} is larger than 1024 KiB: "
           "not a PEM private key\n")


def test_token_mint_refuses_an_encrypted_key_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Before: a TypeError traceback ("Password was not given but private key is encrypted").
    path = tmp_path / "encrypted.pem"
    path.write_bytes(tokens.generate_key("ES256").private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase")))
    assert (mint(path), capsys.readouterr().err) == (
        1, f"tenantgate token: cannot load key: {path}: not a PEM private key (unencrypted)\n")


def test_token_mint_names_a_missing_key_once(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "none.pem"
    assert (mint(path), capsys.readouterr().err) == (
        1, f"tenantgate token: cannot load key: cannot read {path}: No such file or directory\n")


def test_token_mint_reads_the_key_from_a_pipe(capsys: pytest.CaptureFixture[str]) -> None:
    read, write = os.pipe()
    os.write(write, tokens.key_pem(tokens.generate_key("ES256")))
    os.close(write)
    try:
        assert mint(f"/dev/fd/{read}") == 0
    finally:
        os.close(read)
    assert capsys.readouterr().out.count(".") == 2  # a JWT: header.claims.signature


def test_token_mint_takes_a_ttl_of_ten_years(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "k.pem"
    tokens.save_key(tokens.generate_key("ES256"), key)
    assert main(["token", "mint", "--key", str(key), "--iss", "i", "--aud", "a",
                 "--tenant", "acme", "--ttl", str(10 * 365 * 86400)]) == 0
