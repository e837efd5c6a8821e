"""A throwaway certificate authority for TLS tests: a CA, server certificates for loopback,
client certificates, all short-lived EC keys written as PEM."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Issued = tuple[bytes, bytes]  # certificate PEM, private key PEM
Signer = tuple[x509.Certificate, ec.EllipticCurvePrivateKey]


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def certificate(subject: str, issuer: Signer | None, *, ca: bool = False,
                server: bool = False) -> Signer:
    """A CA (self-signed when `issuer` is None), a server certificate for localhost and
    127.0.0.1, or else a client certificate; valid for an hour."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    signer_cert, signer_key = issuer if issuer else (None, key)
    builder = (x509.CertificateBuilder()
               .subject_name(_name(subject))
               .issuer_name(signer_cert.subject if signer_cert else _name(subject))
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(hours=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False).add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    elif not ca:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return builder.sign(signer_key, hashes.SHA256()), key


def pem(pair: Signer) -> Issued:
    key = pair[1].private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return pair[0].public_bytes(serialization.Encoding.PEM), key


def write_pki(directory: Path) -> dict[str, Issued]:
    """`ca`, `server` (signed by ca), `client` (signed by ca) and `stranger` (a client of
    another CA), each written to directory/<name>.crt and <name>.key."""
    ca = certificate("tenantgate test CA", None, ca=True)
    other_ca = certificate("someone else's CA", None, ca=True)
    issued = {"ca": pem(ca), "server": pem(certificate("127.0.0.1", ca, server=True)),
              "client": pem(certificate("operator", ca)),
              "stranger": pem(certificate("operator", other_ca))}
    for name, (cert, key) in issued.items():
        (directory / f"{name}.crt").write_bytes(cert)
        (directory / f"{name}.key").write_bytes(key)
    return issued
