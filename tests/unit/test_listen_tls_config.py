"""listen.tls in the config and in check-config: each unusable file is named by its key path,
with the message serve would refuse it with, and an exit code, never a traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from tenantgate.cli import main
from tenantgate.config.load import load_config
from tenantgate.testing.pki import write_pki

FIXTURES = Path(__file__).parent.parent / "fixtures" / "config"


@pytest.fixture(autouse=True)
def context_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TG_TEST_CONTEXT_KEY", "k" * 64)


def write(directory: Path, **listen: Any) -> Path:
    write_pki(directory)
    (directory / "empty.pem").write_bytes(b"")
    document = yaml.safe_load((FIXTURES / "valid.yaml").read_text())
    document["listen"].update(listen)
    path = directory / "tenantgate.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def check_config(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["check-config", str(path)])
    captured = capsys.readouterr()
    return code, captured.err or captured.out


def test_relative_files_are_read_beside_the_config(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, tls={"cert": "server.crt", "key": "server.key",
                                "client_ca": "ca.crt"})
    assert check_config(path, capsys) == (0, f"{path}: ok (2 issuers, 1 tenants, 1 routes)\n")
    tls = load_config(str(path)).listen.tls
    assert tls is not None
    assert (tls.cert, tls.key, tls.client_ca) == tuple(
        str(tmp_path / name) for name in ("server.crt", "server.key", "ca.crt"))


@pytest.mark.parametrize(("tls", "message"), [
    ({"cert": "missing.crt", "key": "server.key"},
     "listen.tls.cert: cannot read {dir}/missing.crt"),
    ({"cert": "server.crt", "key": "."}, "listen.tls.key: cannot read {dir}"),
    ({"cert": "server.key", "key": "server.crt"}, "listen.tls.cert: not a PEM certificate"),
    ({"cert": "empty.pem", "key": "server.key"}, "listen.tls.cert: not a PEM certificate"),
    ({"cert": "server.crt", "key": "server.crt"},
     "listen.tls.key: not a PEM private key (unencrypted)"),
    ({"cert": "server.crt", "key": "client.key"},
     "listen.tls.key: not the private key of listen.tls.cert"),
    ({"cert": "server.crt", "key": "server.key", "client_ca": "server.key"},
     "listen.tls.client_ca: not a PEM certificate"),
    ({"cert": "server.crt"}, "listen.tls.key: required key is missing"),
], ids=["missing-file", "directory", "swapped", "empty-cert", "key-is-a-cert", "other-key",
        "ca-is-a-key", "no-key"])
def test_check_config_names_the_unusable_tls_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], tls: dict[str, str],
        message: str) -> None:
    # Before: listen.tls was an unknown key whatever it held.
    path = write(tmp_path, tls=tls)
    expected = message.format(dir=tmp_path)
    assert check_config(path, capsys) == (2, f"{path}: {expected}\n")


def test_tls_with_only_a_unix_socket_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, grpc=None, uds=str(tmp_path / "authz.sock"),
                 tls={"cert": "server.crt", "key": "server.key"})
    assert check_config(path, capsys) == (
        2, f"{path}: listen.tls: applies to listen.grpc only, and listen.grpc is not set "
           "(listen.uds is a local socket, served without TLS)\n")
