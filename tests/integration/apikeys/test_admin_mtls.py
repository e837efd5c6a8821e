"""The admin API over mutual TLS: a client certificate signed by the configured CA gets in;
no certificate, or one from another CA, is refused at the handshake."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import grpc
import pytest
import yaml
from apikey_support import write_config
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from tenantgate._gen.tenantgate.admin.v1 import apikeys_pb2, apikeys_pb2_grpc
from tenantgate.app import App

Issued = tuple[bytes, bytes]  # certificate PEM, private key PEM


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _certificate(subject: str, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
                 *, ca: bool = False, server: bool = False
                 ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
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


def _pem(pair: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]) -> Issued:
    return pair[0].public_bytes(serialization.Encoding.PEM), _pem_key(pair[1])


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Issued]:
    ca = _certificate("tenantgate test CA", None, ca=True)
    other_ca = _certificate("someone else's CA", None, ca=True)
    issued = {"ca": _pem(ca), "server": _pem(_certificate("127.0.0.1", ca, server=True)),
              "client": _pem(_certificate("operator", ca)),
              "stranger": _pem(_certificate("operator", other_ca))}
    for name, (cert, key) in issued.items():
        (tmp_path / f"{name}.crt").write_bytes(cert)
        (tmp_path / f"{name}.key").write_bytes(key)
    return issued


async def _list_keys(address: str, ca: bytes, client: Issued | None
                     ) -> apikeys_pb2.ListKeysResponse:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=client[1] if client else None,
        certificate_chain=client[0] if client else None)
    async with grpc.aio.secure_channel(address, credentials) as channel:
        stub = apikeys_pb2_grpc.ApiKeyAdminStub(channel)
        return await stub.ListKeys(apikeys_pb2.ListKeysRequest(tenant="acme"), timeout=5)


async def test_admin_api_over_mtls_admits_only_clients_of_its_ca(
        tmp_path: Path, redis_url: str, pki: dict[str, Issued]) -> None:
    path, _, admin_port = write_config(tmp_path / "mtls", redis_url, admin=True)
    document = yaml.safe_load(path.read_text())
    document["admin"] = {"listen": f"127.0.0.1:{admin_port}",
                         "tls": {"cert": str(tmp_path / "server.crt"),
                                 "key": str(tmp_path / "server.key"),
                                 "client_ca": str(tmp_path / "ca.crt")}}
    path.write_text(yaml.safe_dump(document))
    app = App(str(path))
    await app.start()
    address, ca = f"127.0.0.1:{admin_port}", pki["ca"][0]
    try:
        listed = await _list_keys(address, ca, pki["client"])
        assert list(listed.keys) == []
        for client in (None, pki["stranger"]):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await _list_keys(address, ca, client)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE  # no TLS session at all
    finally:
        await app.stop()
