"""TLS towards tenantgate: the cluster's transport socket and the file-based SDS resources
that hand Envoy the CA, certificate and key (checked here, before Envoy ever reads them)."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml
from betterproto2 import Casing

from tenantgate.config.envoy.addresses import DNS_NAME, is_ip, is_loopback
from tenantgate.config.envoy.generated import generated_imports
from tenantgate.config.envoy.options import EnvoyConfigError, EnvoyOptions
from tenantgate.config.files import UnfitFile, read_regular_file
from tenantgate.config.tls import (
    MAX_PEM_BYTES,
    certificate_keys,
    is_key_of,
    unencrypted_private_key,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

with generated_imports():
    from envoy_data_plane.envoy.config.core.v3 import (
        Address,
        ApiVersion,
        ConfigSource,
        DataSource,
        PathConfigSource,
        TransportSocket,
        WatchedDirectory,
    )
    from envoy_data_plane.envoy.extensions.transport_sockets.tls.v3 import (
        CertificateValidationContext,
        CommonTlsContext,
        CommonTlsContextCombinedCertificateValidationContext,
        SdsSecretConfig,
        Secret,
        SubjectAltNameMatcher,
        SubjectAltNameMatcherSanType,
        TlsCertificate,
        UpstreamTlsContext,
    )
    from envoy_data_plane.envoy.service.discovery.v3 import DiscoveryResponse
    from envoy_data_plane.envoy.type.matcher.v3 import StringMatcher
    from envoy_data_plane.google.protobuf import Any as AnyMessage


TLS_SOCKET = "envoy.transport_sockets.tls"


def authz_transport(options: EnvoyOptions,
                    address: Address) -> tuple[TransportSocket | None, list[SdsFile]]:
    """TLS towards tenantgate and the SDS files it names, or None and no files for plaintext
    (a Unix socket, loopback, or a hop the operator says a mesh encrypts). Every Check carries
    the client's bearer token or API key, and an allow carries the tenant Envoy forwards: over
    a network, in the clear, both can be read and rewritten."""
    if options.authz_tls_ca is None:
        for flag in ("cert", "key", "sni"):
            if getattr(options, f"authz_tls_{flag}") is not None:  # dropped without a word
                raise EnvoyConfigError(f"--authz-tls-{flag}: needs --authz-tls-ca")
    if address.pipe is not None:
        if options.authz_tls_ca is not None or options.authz_plaintext:
            flag = "--authz-tls-ca" if options.authz_tls_ca is not None else "--authz-plaintext"
            raise EnvoyConfigError(f"{flag}: Envoy calls tenantgate over the Unix socket "
                                   f"{address.pipe.path}, which takes no TLS")
        return None, []
    assert address.socket_address is not None
    host = address.socket_address.address
    if options.authz_tls_ca is not None:
        if options.authz_plaintext:
            raise EnvoyConfigError("--authz-plaintext: contradicts --authz-tls-ca")
        return _authz_tls(options, host)
    # In either mode: a sidecar without listen.uds may be given a tenantgate elsewhere too.
    remote = not is_loopback(host)
    if options.authz_plaintext is None or (remote and options.authz_plaintext):
        return None, []
    if remote:
        where = "--authz" if options.authz else "listen.grpc"
        raise EnvoyConfigError(
            f"{where}: {host} is beyond loopback, and Envoy would send every bearer token and "
            f"API key to tenantgate, and take its answers, in plaintext: give --authz-tls-ca "
            f"FILE, or --authz-plaintext when a mesh already encrypts this hop (Istio mTLS)")
    if options.authz_plaintext:  # it would be dropped without a word
        raise EnvoyConfigError(f"--authz-plaintext: only for a tenantgate beyond loopback; "
                               f"{host} is loopback, allowed plaintext anyway")
    return None, []


def _authz_tls(options: EnvoyOptions, host: str) -> tuple[TransportSocket, list[SdsFile]]:
    assert options.authz_tls_ca is not None
    sni = options.authz_tls_sni
    if sni is not None and (is_ip(sni) or len(sni) > 253 or not DNS_NAME.fullmatch(sni)):
        raise EnvoyConfigError(f"--authz-tls-sni: must be a DNS name, got {sni!r}")
    if sni is None and not is_ip(host):
        sni = host
    # Without a SAN matcher Envoy accepts any certificate the CA signed: whoever holds one
    # (another service of the same CA) could answer Checks. The name Envoy dials must be in it.
    if sni is not None:
        sni = sni.rstrip(".")
        san = SubjectAltNameMatcher(san_type=SubjectAltNameMatcherSanType.DNS,
                                    matcher=StringMatcher(exact=sni))
    else:
        san = SubjectAltNameMatcher(san_type=SubjectAltNameMatcherSanType.IP_ADDRESS,
                                    matcher=StringMatcher(exact=str(ipaddress.ip_address(host))))
    files = authz_sds_files(options)  # read here, once: the caller writes these same files
    ca, *client = files
    context = CommonTlsContext(
        # HTTP/2 over TLS is agreed by ALPN (RFC 9113 3.2); a gRPC server may refuse a
        # handshake that offers no h2.
        alpn_protocols=["h2"],
        # Envoy merges the CA from SDS into this context: the name check stays in the
        # bootstrap, the files in the SDS resources.
        combined_validation_context=CommonTlsContextCombinedCertificateValidationContext(
            default_validation_context=CertificateValidationContext(
                match_typed_subject_alt_names=[san]),
            validation_context_sds_secret_config=ca.reference()),
        tls_certificate_sds_secret_configs=[sds.reference() for sds in client])
    return TransportSocket(name=TLS_SOCKET, typed_config=AnyMessage.pack(
        UpstreamTlsContext(common_tls_context=context, sni=sni or ""))), files


# Envoy re-reads TLS files only when they come through SDS: a DataSource in the cluster, or a
# secret under static_resources.secrets, is read once at start (checked with Envoy 1.40), and
# a renewed client certificate that expires then fails every Check. A file SDS source needs no
# server: Envoy reads the resource from a file and watches the directories of the files it names.
AUTHZ_CA_SECRET = "tenantgate-authz-ca"
AUTHZ_CLIENT_SECRET = "tenantgate-authz-client"
# Envoy refuses SDS, from a file too, without a node id and cluster (--service-node and
# --service-cluster still override them).
SDS_NODE = "tenantgate-envoy"


@dataclass(frozen=True, slots=True)
class SdsFile:
    """One SDS resource file: where Envoy reads it (absolute), and the secret it holds."""

    path: str
    secret: Secret

    def reference(self) -> SdsSecretConfig:
        source = ConfigSource(path_config_source=PathConfigSource(path=self.path),
                              resource_api_version=ApiVersion.V3)
        return SdsSecretConfig(name=self.secret.name, sds_config=source)

    def render(self) -> str:
        # One secret per file: Envoy refuses a file SDS update holding more than the one named.
        response = DiscoveryResponse(resources=[AnyMessage.pack(self.secret)])
        header = ("# SDS resource rendered by `tenantgate envoy-config` with the bootstrap "
                  "naming it; do not edit.\n# Envoy reads the files below again when their "
                  "directory sees a move (a Secret volume's renewal).\n")
        return header + yaml.safe_dump(response.to_dict(casing=Casing.SNAKE), sort_keys=False,
                                       default_flow_style=False, width=100)


def authz_sds_files(options: EnvoyOptions) -> list[SdsFile]:
    """The SDS files of the TLS towards tenantgate: the CA first, then the client certificate
    (mutual TLS); none without --authz-tls-ca. Every file is checked before any path is made."""
    if options.authz_tls_ca is None:
        return []
    given = options.authz_tls_ca
    _certificate_keys(given, "--authz-tls-ca")
    ca = _absolute(given)
    client = _client_certificate(options)
    files = [SdsFile(_sds_path(options, "authz-ca"), Secret(
        name=AUTHZ_CA_SECRET, validation_context=CertificateValidationContext(
            trusted_ca=DataSource(filename=ca), watched_directory=_watched(ca))))]
    if client is not None:
        files.append(SdsFile(_sds_path(options, "authz-client"),
                             Secret(name=AUTHZ_CLIENT_SECRET, tls_certificate=client)))
    return files


def _sds_path(options: EnvoyOptions, kind: str) -> str:
    # Beside the bootstrap and named after it, so two bootstraps in one directory keep theirs.
    if options.output is None:
        raise EnvoyConfigError("--authz-tls-ca: needs --output FILE: Envoy re-reads the TLS "
                               "files through SDS files written beside the bootstrap")
    output = os.path.abspath(options.output)
    try:
        output.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from argv bytes: the YAML could not hold them
        raise EnvoyConfigError("--output: not valid UTF-8, and the bootstrap names the SDS "
                               "files beside it by path") from None
    return f"{os.path.splitext(output)[0]}.{kind}.sds.yaml"


def _watched(path: str) -> WatchedDirectory:
    # A Secret volume renews by moving a new ..data link into the directory holding the
    # files' links: a move there makes Envoy read the files again.
    return WatchedDirectory(path=os.path.dirname(path))


def _client_certificate(options: EnvoyOptions) -> TlsCertificate | None:
    cert, key = options.authz_tls_cert, options.authz_tls_key
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        given, missing = ("cert", "key") if key is None else ("key", "cert")
        raise EnvoyConfigError(f"--authz-tls-{given}: needs --authz-tls-{missing} too")
    # The first certificate is the one Envoy presents, whose key --authz-tls-key must be.
    public = _certificate_keys(cert, "--authz-tls-cert")[0]
    # Loaded, not matched: Envoy, given no passphrase, refuses an encrypted key, whichever
    # form it comes in.
    private = unencrypted_private_key(_read_pem(key, "--authz-tls-key"))
    if private is None:
        raise EnvoyConfigError(f"--authz-tls-key: {key} holds no PEM unencrypted private key")
    # Envoy loads the pair only when it reads the SDS file, after `envoy --mode validate` has
    # said OK and the server has started: a key of another certificate leaves it without a
    # client certificate, denying every request (503).
    if not is_key_of(private, public):
        raise EnvoyConfigError(f"--authz-tls-key: {key} is not the private key of the "
                               f"--authz-tls-cert certificate {cert}")
    chain, private_path = _absolute(cert), _absolute(key)
    # One directory watched for both makes Envoy read the pair together and refuse a pair
    # caught mid-change; in two directories, Envoy watches each file's own.
    shared = os.path.dirname(chain) == os.path.dirname(private_path)
    return TlsCertificate(certificate_chain=DataSource(filename=chain),
                          private_key=DataSource(filename=private_path),
                          watched_directory=_watched(chain) if shared else None)


def _read_pem(path: str, what: str) -> bytes:
    """The bytes of a TLS file, to be checked here: a wrong file is better refused now than by
    Envoy, which would start without the secret and deny every request."""
    try:  # bounded, regular files only: a FIFO would hang this command, /dev/zero fill memory
        return read_regular_file(Path(path), MAX_PEM_BYTES)
    except UnfitFile as exc:
        raise EnvoyConfigError(f"{what}: cannot read {path}: {exc}") from None
    except OSError as exc:
        raise EnvoyConfigError(f"{what}: cannot read {path}: {exc.strerror}") from None


def _certificate_keys(path: str, flag: str) -> list[CertificatePublicKeyTypes]:
    """The public keys of every certificate in a TLS file, as serve checks listen.tls: a
    certificate Envoy cannot parse, anywhere in the file, makes it reject the whole secret
    once started (update_rejected, every request 503)."""
    data = _read_pem(path, flag)  # outside the try: its EnvoyConfigError is a ValueError too
    try:
        return certificate_keys(data)
    except ValueError as exc:
        raise EnvoyConfigError(f"{flag}: {path}: {exc}") from None


def _absolute(path: str) -> str:
    # Absolute, for an Envoy started elsewhere; symlinks kept, as a Kubernetes Secret volume
    # swaps its ..data link on rotation (and the watched directory is the links' own).
    return os.path.abspath(path)
