"""TLS for a gRPC listener (listen.tls, admin.tls): the config block, reading and checking its
PEM files with messages that name the key, and the server credentials built from them."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import grpc
from pydantic import ValidationInfo, field_validator

from tenantgate.config.types import Model, UnfitFile, read_regular_file
from tenantgate.errors import ConfigError

# A certificate chain or a CA bundle: a few KiB, a whole public bundle ~250 KiB. A larger file
# is a wrong path, and is not read whole.
MAX_PEM_BYTES = 1024 * 1024


class TlsConfig(Model):
    """Server certificate, and the CA that signs client certificates (mTLS)."""

    cert: str
    key: str
    client_ca: str | None = None  # set: clients must present a certificate signed by it

    @field_validator("cert", "key", "client_ca")
    @classmethod
    def _readable(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        path = Path((info.context or {}).get("base_dir", ".")) / value
        if not path.is_file():
            raise ValueError(f"cannot read {path}")
        return str(path)


class TlsFiles(NamedTuple):
    """The PEM bytes of a TlsConfig, checked: a certificate, its key, the client CA or None."""

    cert: bytes
    key: bytes
    client_ca: bytes | None


def read_tls(tls: TlsConfig, at: str) -> TlsFiles:
    """The files of the block at key path `at` (`listen.tls`), checked as serve needs them;
    ConfigError naming the key otherwise (check-config runs this too)."""
    cert, key = _read(at, "cert", tls.cert), _read(at, "key", tls.key)
    ca = _read(at, "client_ca", tls.client_ca) if tls.client_ca else None
    _check_pem(at, cert, key, ca)
    return TlsFiles(cert, key, ca)


def server_credentials(tls: TlsConfig, at: str) -> grpc.ServerCredentials:
    """Fixed credentials: the files are read once, here (the admin listener)."""
    cert, key, ca = read_tls(tls, at)
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca,
                                       require_client_auth=ca is not None)


def _read(at: str, name: str, path: str) -> bytes:
    try:
        return read_regular_file(Path(path), MAX_PEM_BYTES)
    except UnfitFile as exc:  # swapped for a FIFO or a device since the config was loaded
        raise ConfigError([f"{at}.{name}: cannot read {path}: {exc}"]) from None
    except OSError as exc:
        raise ConfigError([f"{at}.{name}: cannot read {path}: {exc.strerror}"]) from None


def _check_pem(at: str, cert: bytes, key: bytes, ca: bytes | None) -> None:
    # gRPC takes any bytes here and only fails to bind, which reads as "address in use":
    # name the file instead (a swapped cert and key is the usual mistake).
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    def problem(name: str, what: str) -> ConfigError:
        return ConfigError([f"{at}.{name}: not a PEM {what}"])

    certificates = {}
    for name, data in (("cert", cert), ("client_ca", ca)):
        try:
            certificates[name] = x509.load_pem_x509_certificates(data) if data else []
        except ValueError:
            raise problem(name, "certificate") from None
    if not certificates["cert"]:  # an empty file: no certificate to serve
        raise problem("cert", "certificate")
    try:
        private = serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):  # TypeError: encrypted
        raise problem("key", "private key (unencrypted)") from None
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if (certificates["cert"][0].public_key().public_bytes(*spki)
            != private.public_key().public_bytes(*spki)):
        raise ConfigError([f"{at}.key: not the private key of {at}.cert"])
