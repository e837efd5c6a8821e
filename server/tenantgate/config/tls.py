"""TLS for a gRPC listener (listen.tls, admin.tls): the config block, reading and checking its
PEM files with messages that name the key, and the server credentials built from them, read
again when the files are renewed (RotatingCredentials)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import grpc
from pydantic import ValidationInfo, field_validator

from tenantgate.config.files import UnfitFile, read_regular_file
from tenantgate.config.types import Model
from tenantgate.errors import ConfigError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import (
        CertificatePublicKeyTypes,
        PrivateKeyTypes,
    )

log = logging.getLogger("tenantgate")
# A certificate chain or a CA bundle: a few KiB, a whole public bundle ~250 KiB. A larger file
# is a wrong path, and is not read whole.
MAX_PEM_BYTES = 1024 * 1024
# Each rotating listener's block, and its label in tenantgate_tls_reread_failures_total.
LISTENERS = {"listen.tls": "grpc", "admin.tls": "admin"}


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


def _read(at: str, name: str, path: str) -> bytes:
    try:
        return read_regular_file(Path(path), MAX_PEM_BYTES)
    except UnfitFile as exc:  # swapped for a FIFO or a device since the config was loaded
        raise ConfigError([f"{at}.{name}: cannot read {path}: {exc}"]) from None
    except OSError as exc:
        raise ConfigError([f"{at}.{name}: cannot read {path}: {exc.strerror}"]) from None


def unencrypted_private_key(data: bytes) -> PrivateKeyTypes | None:
    """The PEM private key in `data`, or None when there is none that loads without a
    passphrase: none is ever given (gRPC and Envoy take no passphrase), so an encrypted key,
    PKCS#8 or the legacy Proc-Type form, is as unusable as a wrong file."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    try:
        return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):  # TypeError: encrypted
        return None


def is_key_of(private: PrivateKeyTypes, public: CertificatePublicKeyTypes) -> bool:
    """Whether `private` is the key of a certificate's `public` key (a swapped cert and key
    is the usual mistake)."""
    from cryptography.hazmat.primitives import serialization

    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private.public_key().public_bytes(*spki) == public.public_bytes(*spki)


def _check_pem(at: str, cert: bytes, key: bytes, ca: bytes | None) -> None:
    # gRPC takes any bytes here and only fails to bind, which reads as "address in use":
    # name the file instead.
    served = _checked_keys(at, "cert", cert)[0]
    if ca is not None:
        _checked_keys(at, "client_ca", ca)
    if (private := unencrypted_private_key(key)) is None:
        raise ConfigError([f"{at}.key: not a PEM private key (unencrypted)"])
    if not is_key_of(private, served):
        raise ConfigError([f"{at}.key: not the private key of {at}.cert"])


def _checked_keys(at: str, name: str, data: bytes) -> list[CertificatePublicKeyTypes]:
    try:
        return certificate_keys(data)
    except ValueError as exc:
        raise ConfigError([f"{at}.{name}: {exc}"]) from None


def certificate_keys(data: bytes) -> list[CertificatePublicKeyTypes]:
    """The public keys of the PEM certificates in `data`, at least one; ValueError saying why
    not, for the caller to prefix with the file's key path or flag. An empty client_ca is
    refused like an empty cert: gRPC would take it, then fail every client's handshake."""
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm

    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:  # no PEM certificate at all (an empty file too), or a broken one
        raise ValueError("not a PEM certificate") from None
    keys = []
    for number, certificate in enumerate(certificates, 1):
        # Parsed lazily: a key type or curve cryptography does not know (a wrong file copied
        # in) raises here, not at loading, and must be named like any other unusable file.
        try:
            keys.append(certificate.public_key())
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise ValueError(f"certificate {number} has a public key that cannot be used: "
                             f"{exc}") from None
    return keys


class RotatingCredentials:
    """Server credentials whose files are read again on demand (reread): a changed, valid
    set is served from the next TLS handshake on; connections already open keep theirs.

    For a certificate that is renewed under the same path while the server runs (cert-manager
    rewriting a mounted Secret): the listener cannot be bound again without dropping Envoy's
    connections, and a certificate read only at start would expire under a long-lived pod."""

    def __init__(self, tls: TlsConfig, at: str) -> None:
        self.tls, self.at = tls, at
        self._served = read_tls(tls, at)  # at start, a bad file is the start's error
        self.failed = False  # the last reread could not use the files (the caller counts it)
        self._next: grpc.ServerCertificateConfiguration | None = None
        self._lock = threading.Lock()  # gRPC asks from its own threads, one per handshake
        self.credentials = grpc.dynamic_ssl_server_credentials(
            _configuration(self._served), self._fetch,
            require_client_authentication=tls.client_ca is not None)

    def reread(self) -> bool:
        """Read the files again; True when a new set will be served. A set that cannot be used
        (half written, a key that does not match) is logged and the served one kept: failing
        here would take down a listener that still has a valid certificate."""
        self.failed = True  # until the files were read and checked
        try:
            files = read_tls(self.tls, self.at)
        except ConfigError as exc:
            log.error("%s: keeping the certificate served: %s", self.at, "; ".join(exc.issues))
            return False
        self.failed = False
        if files == self._served:
            return False
        with self._lock:
            self._served, self._next = files, _configuration(files)
        log.info("%s: certificate files changed; new connections get the new ones", self.at)
        return True

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        # Called on every handshake: None keeps the current configuration, and a new one is
        # handed over once (returning it every time would rebuild the SSL context each time).
        with self._lock:
            configuration, self._next = self._next, None
        return configuration


def _configuration(files: TlsFiles) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration([(files.key, files.cert)],
                                                     root_certificates=files.client_ca)
