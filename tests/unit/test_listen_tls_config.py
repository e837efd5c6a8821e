"""listen.tls in the config and in check-config: each unusable file is named by its key path,
with the message serve would refuse it with, and an exit code, never a traceback."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from tenantgate.cli import main
from tenantgate.config.load import load_config
from tenantgate.config.tls import RotatingCredentials
from tenantgate.testing.pki import write_pki

FIXTURES = Path(__file__).parent.parent / "fixtures" / "config"


@pytest.fixture(autouse=True)
def context_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TG_TEST_CONTEXT_KEY", "k" * 64)


def with_unknown_key_type(certificate: bytes) -> bytes:
    """The certificate with its key's algorithm (id-ecPublicKey) changed to an OID nobody
    knows: it loads, and its key fails only when asked for (a wrong file copied in)."""
    der = x509.load_pem_x509_certificate(certificate).public_bytes(Encoding.DER)
    ec_public_key = bytes.fromhex("06072a8648ce3d0201")  # 1.2.840.10045.2.1
    assert der.count(ec_public_key) == 1
    return ssl.DER_cert_to_PEM_cert(der.replace(
        ec_public_key, bytes.fromhex("06072a8648ce3d0209"))).encode()


def write(directory: Path, **listen: Any) -> Path:
    issued = write_pki(directory)
    (directory / "empty.pem").write_bytes(b"")
    (directory / "unknown-key.crt").write_bytes(with_unknown_key_type(issued["server"][0]))
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
    ({"cert": "server.crt", "key": "server.key", "client_ca": "empty.pem"},
     "listen.tls.client_ca: not a PEM certificate"),
    ({"cert": "unknown-key.crt", "key": "server.key"},
     "listen.tls.cert: certificate 1 has a public key that cannot be used: Unknown key type: "
     "1.2.840.10045.2.9"),
    ({"cert": "server.crt", "key": "server.key", "client_ca": "unknown-key.crt"},
     "listen.tls.client_ca: certificate 1 has a public key that cannot be used: Unknown key "
     "type: 1.2.840.10045.2.9"),
    ({"cert": "server.crt"}, "listen.tls.key: required key is missing"),
], ids=["missing-file", "directory", "swapped", "empty-cert", "key-is-a-cert", "other-key",
        "ca-is-a-key", "empty-ca", "cert-key-of-unknown-type", "ca-key-of-unknown-type",
        "no-key"])
def test_check_config_names_the_unusable_tls_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], tls: dict[str, str],
        message: str) -> None:
    # Before: listen.tls was an unknown key whatever it held. An empty client_ca passed, and
    # then failed every client's handshake; a key of unknown type ended in a traceback.
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


def test_admin_tls_names_a_certificate_key_of_unknown_type(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path)
    document = yaml.safe_load(path.read_text())
    document["api_keys"] = {"hash_secret": {"fromEnv": "TG_TEST_CONTEXT_KEY"},
                            "redis_url": "redis://127.0.0.1:6379/0"}  # never connected to
    document["admin"] = {"tls": {"cert": "unknown-key.crt", "key": "server.key",
                                 "client_ca": "ca.crt"}}
    path.write_text(yaml.safe_dump(document))
    assert check_config(path, capsys) == (
        2, f"{path}: admin.tls.cert: certificate 1 has a public key that cannot be used: "
           "Unknown key type: 1.2.840.10045.2.9\n")


@pytest.mark.parametrize("replaced", [
    ("server.crt", "unknown-key.crt"), ("ca.crt", "empty.pem")], ids=["cert-key-of-unknown-type",
                                                                      "emptied-client-ca"])
def test_a_reread_keeps_the_served_set_when_the_new_one_is_unusable(
        tmp_path: Path, replaced: tuple[str, str]) -> None:
    # A renewal caught half way, or a wrong file copied in: the served set stays. Before, an
    # emptied client_ca was swapped in (every client refused), and a key of unknown type
    # raised out of reread, which ended the 60 s re-read task for good.
    config = load_config(str(write(tmp_path, tls={"cert": "server.crt", "key": "server.key",
                                                  "client_ca": "ca.crt"})))
    assert config.listen.tls is not None
    credentials = RotatingCredentials(config.listen.tls, "listen.tls")
    served = credentials._served
    target, source = replaced
    original = (tmp_path / target).read_bytes()
    (tmp_path / target).write_bytes((tmp_path / source).read_bytes())
    assert credentials.reread() is False
    assert credentials._served == served
    assert credentials.failed  # what the App counts in tenantgate_tls_reread_failures_total
    (tmp_path / target).write_bytes(original)  # fixed: read, unchanged, no longer failing
    assert credentials.reread() is False
    assert not credentials.failed
