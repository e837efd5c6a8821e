"""The Envoy bootstrap that matches a tenantgate config, built from envoy-data-plane's typed
messages (a wrong field name or type fails here, not in Envoy at deploy time)."""

from __future__ import annotations

import datetime
import ipaddress
import math
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from betterproto2 import Casing

from tenantgate.config.model import Config
from tenantgate.config.quota import Rate
from tenantgate.config.tls import (
    MAX_PEM_BYTES,
    certificate_keys,
    is_key_of,
    unencrypted_private_key,
)
from tenantgate.config.types import (
    DURATION_MAX_SECONDS,
    UnfitFile,
    check_socket_path_length,
    read_regular_file,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

# envoy-data-plane 2.2's generated classes use a pydantic form deprecated in 2.12; the warning
# is theirs, and the suite turns warnings into errors.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from envoy_data_plane.envoy.config.accesslog.v3 import AccessLog
    from envoy_data_plane.envoy.config.bootstrap.v3 import (
        Admin,
        Bootstrap,
        BootstrapStaticResources,
    )
    from envoy_data_plane.envoy.config.cluster.v3 import (
        Cluster,
        ClusterDiscoveryType,
        ClusterDnsLookupFamily,
    )
    from envoy_data_plane.envoy.config.common.mutation_rules.v3 import HeaderMutation
    from envoy_data_plane.envoy.config.core.v3 import (
        Address,
        ApiVersion,
        ConfigSource,
        DataSource,
        GrpcService,
        GrpcServiceEnvoyGrpc,
        HeaderValue,
        HeaderValueOption,
        HeaderValueOptionHeaderAppendAction,
        Http2ProtocolOptions,
        HttpProtocolOptions,
        HttpProtocolOptionsHeadersWithUnderscoresAction,
        KeepaliveSettings,
        Node,
        PathConfigSource,
        Pipe,
        RuntimeFractionalPercent,
        SocketAddress,
        SubstitutionFormatString,
        TransportSocket,
        TypedExtensionConfig,
        WatchedDirectory,
    )
    from envoy_data_plane.envoy.config.endpoint.v3 import (
        ClusterLoadAssignment,
        Endpoint,
        LbEndpoint,
        LocalityLbEndpoints,
    )
    from envoy_data_plane.envoy.config.listener.v3 import Filter, FilterChain, Listener
    from envoy_data_plane.envoy.config.overload.v3 import OverloadManager, ResourceMonitor
    from envoy_data_plane.envoy.config.ratelimit.v3 import RateLimitServiceConfig
    from envoy_data_plane.envoy.config.route.v3 import (
        RateLimit,
        RateLimitAction,
        RateLimitActionMaskedRemoteAddress,
        RateLimitActionMetaData,
        RateLimitActionMetaDataSource,
        RateLimitActionRequestHeaders,
        Route,
        RouteAction,
        RouteConfiguration,
        RouteMatch,
        VirtualHost,
    )
    from envoy_data_plane.envoy.extensions.access_loggers.stream.v3 import StdoutAccessLog
    from envoy_data_plane.envoy.extensions.common.ratelimit.v3 import (
        LocalRateLimitDescriptor,
        RateLimitDescriptorEntry,
        XRateLimitHeadersRfcVersion,
    )
    from envoy_data_plane.envoy.extensions.filters.http.ext_authz.v3 import ExtAuthz
    from envoy_data_plane.envoy.extensions.filters.http.local_ratelimit.v3 import LocalRateLimit
    from envoy_data_plane.envoy.extensions.filters.http.ratelimit.v3 import (
        RateLimit as RateLimitFilter,
    )
    from envoy_data_plane.envoy.extensions.filters.http.ratelimit.v3 import (
        RateLimitXRateLimitHeadersRfcVersion,
    )
    from envoy_data_plane.envoy.extensions.filters.http.router.v3 import Router
    from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3 import (
        HttpConnectionManager,
        HttpConnectionManagerCodecType,
        HttpConnectionManagerPathWithEscapedSlashesAction,
        HttpFilter,
    )
    from envoy_data_plane.envoy.extensions.formatter.req_without_query.v3 import ReqWithoutQuery
    from envoy_data_plane.envoy.extensions.http.early_header_mutation.header_mutation.v3 import (
        HeaderMutation as EarlyHeaderMutation,
    )
    from envoy_data_plane.envoy.extensions.resource_monitors.downstream_connections.v3 import (
        DownstreamConnectionsConfig,
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
    from envoy_data_plane.envoy.extensions.upstreams.http.v3 import (
        HttpProtocolOptions as UpstreamHttpProtocolOptions,
    )
    from envoy_data_plane.envoy.extensions.upstreams.http.v3 import (
        HttpProtocolOptionsExplicitHttpConfig,
    )
    from envoy_data_plane.envoy.service.discovery.v3 import DiscoveryResponse
    from envoy_data_plane.envoy.type.matcher.v3 import ListStringMatcher, StringMatcher
    from envoy_data_plane.envoy.type.metadata.v3 import MetadataKey, MetadataKeyPathSegment
    from envoy_data_plane.envoy.type.v3 import (
        FractionalPercent,
        FractionalPercentDenominatorType,
        HttpStatus,
        StatusCode,
        TokenBucket,
    )
    from envoy_data_plane.google.protobuf import Any as AnyMessage
    from envoy_data_plane.google.protobuf import Struct

Mode = Literal["sidecar", "front"]
EXT_AUTHZ_FILTER = "envoy.filters.http.ext_authz"  # also the dynamic-metadata namespace
AUTHZ_CLUSTER = "tenantgate"
APP_CLUSTER = "app"
DEFAULT_LISTEN: dict[Mode, str] = {"sidecar": "0.0.0.0:15000", "front": "0.0.0.0:8080"}
# Headers the client may send to Check besides those Envoy always includes (host, method, path,
# content-length, authorization). Nothing else reaches tenantgate.
CHECK_HEADERS = ("authorization", "content-type", "content-length", "x-request-id")
ACCESS_LOG_FIELDS = {
    "start_time": "%START_TIME%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "method": "%REQ(:METHOD)%",
    "path": "%REQ_WITHOUT_QUERY(:PATH)%",  # never the query string: it may carry secrets
    "protocol": "%PROTOCOL%",
    "status": "%RESPONSE_CODE%",
    "flags": "%RESPONSE_FLAGS%",
    "duration_ms": "%DURATION%",
    "tenant": f"%DYNAMIC_METADATA({EXT_AUTHZ_FILTER}:tenant)%",
    "plan": f"%DYNAMIC_METADATA({EXT_AUTHZ_FILTER}:plan)%",
}


class EnvoyConfigError(ValueError):
    """The options cannot make a bootstrap for this config (one line, names the option)."""


# Envoy's edge best-practice guide: 32 KiB buffered per connection, streams and requests
# bounded in time (5 minutes; the route's own timeout still applies once a request is complete).
CONNECTION_BUFFER_BYTES = 32 * 1024
IDLE_TIMEOUT = datetime.timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class EnvoyOptions:
    mode: Mode = "sidecar"
    listen: str | None = None  # host:port of the HTTP listener; default by mode
    upstream: str = "127.0.0.1:8000"  # the application Envoy routes allowed requests to
    admin: str = "127.0.0.1:9901"
    authz: str | None = None  # front mode: tenantgate host:port (default: config listen.grpc)
    authz_timeout: float | None = None  # default: authz_timeout_for(config), at least 0.25 s
    route_timeout: float = 15.0  # 0: none (Envoy's meaning)
    rate_limit: bool | None = None  # global rate-limit filter; default: when RLS files are set
    rate_limit_domain: str | None = None  # default: the domain of the first RLS config file
    access_log: bool = True
    client_limit: Rate | None = None  # front mode: requests per client address, before ext_authz
    client_limit_addresses: int | None = None  # buckets Envoy keeps (LRU); default 10,000
    max_connections: int = 10_000  # open client connections, all listeners together
    xff_num_trusted_hops: int = 0  # proxies before Envoy that append to XFF
    # TLS towards tenantgate over TCP (its cluster carries Check and ShouldRateLimit): the CA
    # bundle (PEM) Envoy verifies tenantgate's certificate with; with cert and key, Envoy's own
    # client certificate (mTLS); sni: the name sent and verified (default: the --authz host
    # when it is a DNS name; an IP is verified against the certificate's IP SAN).
    authz_tls_ca: str | None = None
    authz_tls_cert: str | None = None
    authz_tls_key: str | None = None
    authz_tls_sni: str | None = None
    # A tenantgate beyond loopback without TLS (either mode): True allows it (a mesh encrypts the
    # hop), False refuses it. None does not check: the CLI always passes True or False.
    authz_plaintext: bool | None = None
    # The file the bootstrap is written to (--output): with authz_tls_ca, the SDS files naming
    # the TLS files are written beside it, and the bootstrap names them by absolute path.
    output: str | None = None

    def __post_init__(self) -> None:
        # None means "the default"; an empty address is a mistake (`--listen ''` rendered the
        # default listener instead of failing).
        for name in ("listen", "authz"):
            if getattr(self, name) == "":
                raise EnvoyConfigError(f"--{name}: must be host:port, got ''")


# A DNS name: labels of letters, digits and inner hyphens (RFC 1123), and underscores, which
# resolvers and Envoy's DNS accept and Docker's networks use in service names.
_DNS_NAME = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9_-]{1,63}(?<!-))*\.?")


def split_host_port(value: str, what: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    # ASCII digits only: int() reads any Unicode digit, so full-width `009` was port 9.
    if not (sep and host and port.isascii() and port.isdigit()):
        raise EnvoyConfigError(f"{what}: must be host:port, got {value!r}")
    if not 0 < int(port) < 65536:
        raise EnvoyConfigError(f"{what}: the port must be from 1 to 65535, got {value!r}")
    # Anything else went into the bootstrap as it was (a newline, a space, a slash).
    if not (_is_ip(host) or (len(host) <= 253 and _DNS_NAME.fullmatch(host))):
        raise EnvoyConfigError(f"{what}: the host must be an IP address or a DNS name, got "
                               f"{value!r}")
    return host, int(port)


def _socket(value: str, what: str) -> Address:
    """A cluster's target: an address to connect to, never one that means "every address"."""
    host, port = split_host_port(value, what)
    if _is_ip(host) and ipaddress.ip_address(host).is_unspecified:
        raise EnvoyConfigError(f"{what}: {host} means every local address, which is no "
                               f"address to connect to, got {value!r}")
    return Address(socket_address=SocketAddress(address=host, port_value=port))


def _bind_socket(value: str, what: str) -> Address:
    # Envoy resolves no name for an address it listens on (a listener, admin): a name such as
    # localhost passed here and Envoy then refused the whole bootstrap ("malformed IP address").
    host, port = split_host_port(value, what)
    if not _is_ip(host):
        raise EnvoyConfigError(f"{what}: must be an IP address and port (Envoy does not "
                               f"resolve names to listen on), got {value!r}")
    # `::` alone is an IPv6-only socket in Envoy, refusing IPv4 clients; tenantgate's own
    # config reads it as every address, IPv4 included, and so does this listener.
    every_address = ipaddress.ip_address(host) == ipaddress.IPv6Address("::")
    return Address(socket_address=SocketAddress(address=host, port_value=port,
                                                ipv4_compat=every_address))


ADMIN_UNIX_PREFIX = "unix:"
# Only Envoy's own user may connect: in sidecar mode the app shares the pod's loopback, and
# could reach a TCP admin (an SSRF is enough) to raise the log level, which prints every
# bearer token, or to POST /quitquitquit.
ADMIN_SOCKET_MODE = 0o600


def _admin_socket(value: str) -> Address:
    # Envoy's admin interface has no authentication and can drain, quit or change runtime
    # values: it must never listen beyond loopback (expose stats through a listener instead).
    if value.startswith(ADMIN_UNIX_PREFIX):
        return Address(pipe=Pipe(path=_admin_socket_path(value), mode=ADMIN_SOCKET_MODE))
    address = _bind_socket(value, "--admin")
    if not ipaddress.ip_address(split_host_port(value, "--admin")[0]).is_loopback:
        raise EnvoyConfigError(f"--admin: Envoy's admin interface must stay on loopback "
                               f"(127.0.0.1, ::1) or on a unix:/PATH socket, got {value!r}")
    return address


def _admin_socket_path(value: str) -> str:
    path = value.removeprefix(ADMIN_UNIX_PREFIX)
    if path.startswith("@"):  # no file, so no mode: anyone in the network namespace connects
        raise EnvoyConfigError(f"--admin: an abstract socket has no file permissions, so the "
                               f"app could connect to it; give a file path, got {value!r}")
    if not os.path.isabs(path) or "\0" in path:
        raise EnvoyConfigError(f"--admin: unix: takes an absolute file path, got {value!r}")
    try:
        return check_socket_path_length(path)
    except ValueError as exc:
        raise EnvoyConfigError(f"--admin: {exc}") from None


# Envoy's timers count milliseconds (less renders as 0s, which Envoy reads as no timeout).
_MIN_SECONDS = 0.001


def _seconds(value: float, what: str) -> datetime.timedelta:
    if not (math.isfinite(value) and _MIN_SECONDS <= value <= DURATION_MAX_SECONDS):
        raise EnvoyConfigError(f"{what}: must be a number of seconds from {_MIN_SECONDS} "
                               f"to {DURATION_MAX_SECONDS}, got {value!r}")
    return datetime.timedelta(seconds=value)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


# A peer gone without a FIN or RST (its node died) leaves a half-open TCP connection: every
# Check sent on it waits out the authz timeout (503) until TCP gives up, about 15 minutes.
# A PING unanswered for KEEPALIVE_TIMEOUT aborts it within interval + timeout instead.
KEEPALIVE_INTERVAL = datetime.timedelta(seconds=10)
KEEPALIVE_TIMEOUT = datetime.timedelta(seconds=2)


def _grpc_protocol(address: Address) -> Http2ProtocolOptions:
    if address.pipe is not None:
        # A Unix socket's peer is on this kernel, which resets the connection the moment the
        # peer dies: no half-open connection for a PING to find. (Over TCP, tenantgate's server
        # permits PINGs on idle connections, one per 5 s at most, so these draw no GOAWAY.)
        return Http2ProtocolOptions()
    return Http2ProtocolOptions(connection_keepalive=KeepaliveSettings(
        interval=KEEPALIVE_INTERVAL, timeout=KEEPALIVE_TIMEOUT))


def _cluster(name: str, address: Address, *, http2: bool, dns: bool = False,
             transport_socket: TransportSocket | None = None) -> Cluster:
    assignment = ClusterLoadAssignment(cluster_name=name, endpoints=[LocalityLbEndpoints(
        lb_endpoints=[LbEndpoint(endpoint=Endpoint(address=address))])])
    cluster = Cluster(
        name=name, connect_timeout=_seconds(1.0, "connect_timeout"), load_assignment=assignment,
        type=ClusterDiscoveryType.STRICT_DNS if dns else ClusterDiscoveryType.STATIC,
        transport_socket=transport_socket)
    if dns:
        # Envoy's AUTO asks for IPv6 first: `localhost` became ::1 and an app (or tenantgate)
        # on 127.0.0.1 got 503 on every request. IPv4 first, IPv6 when a name has no A record;
        # not ALL, which would make ::1 and 127.0.0.1 two hosts and fail every other request.
        cluster.dns_lookup_family = ClusterDnsLookupFamily.V4_PREFERRED
    if http2:  # gRPC needs HTTP/2 towards tenantgate
        options = UpstreamHttpProtocolOptions(explicit_http_config=(
            HttpProtocolOptionsExplicitHttpConfig(
                http2_protocol_options=_grpc_protocol(address))))
        cluster.typed_extension_protocol_options = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": AnyMessage.pack(options)}
    else:  # the app: bounded buffering per connection, as towards clients
        cluster.per_connection_buffer_limit_bytes = CONNECTION_BUFFER_BYTES
    return cluster


def authz_address(config: Config, options: EnvoyOptions) -> Address:
    """Sidecar: the Unix socket when the config has one (no TCP port to expose); front: TCP."""
    if options.mode == "sidecar" and config.listen.uds:
        if options.authz:  # it would be dropped without a word
            raise EnvoyConfigError(f"--authz: sidecar mode calls tenantgate over listen.uds "
                                   f"({config.listen.uds}); --authz is for --mode front")
        return Address(pipe=Pipe(path=config.listen.uds))
    if options.authz:
        return _socket(options.authz, "--authz")
    if config.listen.grpc is None:
        raise EnvoyConfigError("front mode needs --authz host:port (the config has no "
                               "listen.grpc)")
    host, _ = split_host_port(config.listen.grpc, "listen.grpc")
    if _is_ip(host) and ipaddress.ip_address(host).is_unspecified:
        # tenantgate listens on every address; which one Envoy reaches it by, only you know.
        raise EnvoyConfigError(f"listen.grpc {config.listen.grpc} listens on every address, "
                               f"which Envoy cannot connect to: give --authz HOST:PORT, where "
                               f"Envoy reaches tenantgate")
    return _socket(config.listen.grpc, "listen.grpc")


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
    remote = not _is_loopback(host)
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


def _is_loopback(host: str) -> bool:
    if _is_ip(host):
        return ipaddress.ip_address(host).is_loopback
    return host.lower().rstrip(".") == "localhost"


def _authz_tls(options: EnvoyOptions, host: str) -> tuple[TransportSocket, list[SdsFile]]:
    assert options.authz_tls_ca is not None
    sni = options.authz_tls_sni
    if sni is not None and (_is_ip(sni) or len(sni) > 253 or not _DNS_NAME.fullmatch(sni)):
        raise EnvoyConfigError(f"--authz-tls-sni: must be a DNS name, got {sni!r}")
    if sni is None and not _is_ip(host):
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


def _needs_dns(address: Address) -> bool:
    # A STATIC cluster takes IPs only: a name (a Kubernetes Service) needs STRICT_DNS.
    return address.socket_address is not None and not _is_ip(address.socket_address.address)


def rate_limit_domain(config: Config, options: EnvoyOptions) -> str | None:
    """The domain the global rate-limit filter sends, or None when that filter is off.

    tenantgate answers OK to every ShouldRateLimit of a domain its files do not declare (and to
    all of them while quota is disabled): such a filter would limit nothing, so it is refused."""
    if options.rate_limit_domain == "":  # no file may declare it: it was ignored unsaid
        raise EnvoyConfigError("--rate-limit-domain: must not be empty")
    domains = _declared_domains(config)
    enabled = options.rate_limit if options.rate_limit is not None else bool(domains)
    if not enabled:
        if options.rate_limit_domain is not None:
            raise EnvoyConfigError("--rate-limit-domain: the rate-limit filter is off "
                                   "(--no-rate-limit, or no quota.ratelimit_service.config_files "
                                   "with quota enabled)")
        return None
    if options.rate_limit_domain is not None:
        if options.rate_limit_domain not in domains:
            raise EnvoyConfigError(
                f"--rate-limit-domain: {options.rate_limit_domain!r} is not the domain of any "
                f"quota.ratelimit_service.config_files ({', '.join(domains) or 'none'}): "
                f"tenantgate would answer OK to every request")
        return options.rate_limit_domain
    if domains:
        return domains[0]
    raise EnvoyConfigError("the rate-limit filter needs a domain: quota enabled, with "
                           "quota.ratelimit_service.config_files declaring one")


def _declared_domains(config: Config) -> list[str]:
    if not config.quota.enabled:
        return []
    domains = []
    for name in config.quota.ratelimit_service.config_files:
        try:
            domain = (yaml.safe_load(Path(name).read_text(encoding="utf-8")) or {}).get("domain")
        except (OSError, UnicodeDecodeError, yaml.YAMLError, AttributeError) as exc:
            raise EnvoyConfigError(f"quota.ratelimit_service.config_files: cannot read the "
                                   f"domain from {name}: {exc}") from None
        if isinstance(domain, str) and domain:
            domains.append(domain)
    return domains


DEFAULT_AUTHZ_TIMEOUT = 0.25
# On top of the dependency waits: a Check's own work (signature, policy, gRPC, a busy loop).
AUTHZ_HEADROOM = 0.1


def check_waits(config: Config) -> list[tuple[str, float]]:
    """The timeouts a Check may wait out one after the other: the API-key lookup, then the
    quota store. ShouldRateLimit waits on the quota store alone."""
    waits = []
    if config.api_keys is not None:
        waits.append(("api_keys.redis_timeout", config.api_keys.redis_timeout))
    if config.quota.enabled and config.quota.store == "redis":
        waits.append(("quota.redis.timeout", config.quota.redis.timeout))
    return waits


def authz_timeout_for(config: Config, options: EnvoyOptions) -> float:
    """Envoy's Check and ShouldRateLimit timeout, longer than the Check's dependency waits.

    Were it not, a slow Redis would have Envoy answer 503 (its status_on_error) before
    tenantgate decides, whatever quota.failure_mode says. The default grows with the waits;
    a --authz-timeout that leaves them no room is refused."""
    waits = check_waits(config)
    needed = sum(seconds for _, seconds in waits)
    if options.authz_timeout is None:
        return max(DEFAULT_AUTHZ_TIMEOUT, round(needed + AUTHZ_HEADROOM, 3))
    _seconds(options.authz_timeout, "--authz-timeout")  # in Envoy's range first
    if waits and options.authz_timeout <= needed:
        spelled = " + ".join(f"{name} {seconds:g} s" for name, seconds in waits)
        if len(waits) > 1:
            spelled += f" = {needed:g} s"
        raise EnvoyConfigError(
            f"--authz-timeout: {options.authz_timeout:g} s is not longer than a Check may wait "
            f"on its dependencies ({spelled}): Envoy would answer 503 before tenantgate "
            f"decides; give more, or lower those timeouts")
    return options.authz_timeout


def _early_header_mutation(config: Config) -> TypedExtensionConfig:
    # Runs when the request headers arrive, before route selection and before any HTTP filter,
    # so it removes the client's copies but can never touch what ext_authz adds later (a route's
    # request_headers_to_remove would run after ext_authz and delete tenantgate's headers).
    mutation = EarlyHeaderMutation(mutations=[
        HeaderMutation(remove=name)
        for name in config.context.stripped_headers])
    return TypedExtensionConfig(name="strip-trusted-headers",
                                typed_config=AnyMessage.pack(mutation))


# Envoy refills a local token bucket no more often than this.
MIN_FILL_INTERVAL_SECONDS = 0.05
# Client addresses with a bucket of their own (Envoy's default is 20): past it, the least
# recently seen address loses its bucket and starts afresh when it comes back.
DEFAULT_CLIENT_ADDRESSES = 10_000
_EVERY_REQUEST = RuntimeFractionalPercent(default_value=FractionalPercent(
    numerator=100, denominator=FractionalPercentDenominatorType.HUNDRED))


def _client_limit_filter(options: EnvoyOptions) -> HttpFilter | None:
    """Front mode: one token bucket per client address, spent before ext_authz runs.

    Verifying a token is the costliest thing a Check does, and a client sending a fresh forgery
    with every request makes tenantgate do it each time (the rejected-token cache only answers
    replays). Envoy refuses such a client here, in C++, before it costs a Check."""
    rate, addresses = options.client_limit, options.client_limit_addresses
    if rate is None:
        if addresses is not None:  # it would be dropped without a word
            raise EnvoyConfigError("--client-limit-addresses: needs --client-limit")
        return None
    if options.mode != "front":
        raise EnvoyConfigError("--client-limit: front mode only; in sidecar mode the client "
                               "address is the mesh's gateway or neighbour proxy, so one bucket "
                               "would hold every client's requests")
    if rate.period < MIN_FILL_INTERVAL_SECONDS:
        raise EnvoyConfigError(f"--client-limit: Envoy refills a bucket at most every "
                               f"{MIN_FILL_INTERVAL_SECONDS * 1000:g} ms, got {rate.text!r}")
    addresses = DEFAULT_CLIENT_ADDRESSES if addresses is None else addresses
    if not 1 <= addresses <= 2**32 - 1:  # a UInt32Value in Envoy's API
        raise EnvoyConfigError(f"--client-limit-addresses: must be from 1 to {2**32 - 1}, got "
                               f"{addresses}")
    bucket = TokenBucket(max_tokens=rate.count, tokens_per_fill=rate.count,
                         fill_interval=datetime.timedelta(seconds=rate.period))
    limiter = LocalRateLimit(
        stat_prefix="client_limit",
        filter_enabled=_EVERY_REQUEST, filter_enforced=_EVERY_REQUEST,
        # An entry without a value is a wildcard: each client address gets its own bucket. An
        # IPv6 client counts by its /64, what one subscriber usually holds: one per /128 and
        # a client could take a fresh bucket for every request.
        descriptors=[LocalRateLimitDescriptor(
            entries=[RateLimitDescriptorEntry(key="masked_remote_address")], token_bucket=bucket)],
        rate_limits=[RateLimit(actions=[RateLimitAction(
            masked_remote_address=RateLimitActionMaskedRemoteAddress(
                v4_prefix_mask_len=32, v6_prefix_mask_len=64))])],
        max_dynamic_descriptors=addresses,
        enable_x_ratelimit_headers=XRateLimitHeadersRfcVersion.DRAFT_VERSION_03,
        # x-ratelimit-reset is added after these headers are formatted, so Retry-After cannot
        # copy it as the global filter's does: the refill interval is the longest wait.
        response_headers_to_add=[_retry_after(str(math.ceil(rate.period)))])
    return HttpFilter(name="envoy.filters.http.local_ratelimit",
                      typed_config=AnyMessage.pack(limiter))


def _trusted_hops(options: EnvoyOptions) -> int:
    """Behind a load balancer every request comes from its address, so --client-limit held
    all clients in one bucket; the address it appended to x-forwarded-for is the client's."""
    hops = options.xff_num_trusted_hops
    # Sidecar mode too: behind a TLS-terminating gateway, 0 hops has Envoy overwrite the
    # gateway's x-forwarded-proto: https with its own connection's http.
    if not 0 <= hops <= 2**32 - 1:  # a uint32 in Envoy's API
        raise EnvoyConfigError(f"--xff-num-trusted-hops: must be from 0 to {2**32 - 1}, got "
                               f"{hops}")
    return hops


def _ext_authz(config: Config, timeout: datetime.timedelta) -> HttpFilter:
    headers = dict.fromkeys((*CHECK_HEADERS, config.credentials.api_key_header))
    authz = ExtAuthz(
        grpc_service=GrpcService(envoy_grpc=GrpcServiceEnvoyGrpc(cluster_name=AUTHZ_CLUSTER),
                                 timeout=timeout),
        transport_api_version=ApiVersion.V3,
        # Fail closed: when tenantgate cannot answer, Envoy answers 503 and never passes the
        # request through unauthenticated.
        failure_mode_allow=False,
        status_on_error=HttpStatus(code=StatusCode.ServiceUnavailable),
        # The plain string map: Envoy joins a repeated header with "," in the raw map too, so
        # the raw map shows tenantgate nothing more, and the plain map is cheaper to read.
        encode_raw_headers=False,
        allowed_headers=ListStringMatcher(patterns=[StringMatcher(exact=h) for h in headers]),
    )
    return HttpFilter(name=EXT_AUTHZ_FILTER, typed_config=AnyMessage.pack(authz))


def _retry_after(seconds: str = "%RESP(x-ratelimit-reset)%") -> HeaderValueOption:
    """A 429 says when to come back (RFC 6585); by default the seconds until the limiting
    window resets, which the global rate-limit filter has just put in x-ratelimit-reset."""
    return HeaderValueOption(
        header=HeaderValue(key="retry-after", value=seconds),
        append_action=HeaderValueOptionHeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD)


def _rate_limit_filter(config: Config, domain: str, timeout: datetime.timedelta) -> HttpFilter:
    service = RateLimitServiceConfig(
        grpc_service=GrpcService(envoy_grpc=GrpcServiceEnvoyGrpc(cluster_name=AUTHZ_CLUSTER),
                                 timeout=timeout),
        transport_api_version=ApiVersion.V3)
    limiter = RateLimitFilter(
        domain=domain, timeout=timeout,
        # ShouldRateLimit answers UNAVAILABLE when its store fails, leaving the choice to Envoy:
        # follow the config's quota.failure_mode (only `open` lets the request through).
        failure_mode_deny=config.quota.failure_mode != "open",
        status_on_error=HttpStatus(code=StatusCode.ServiceUnavailable),
        enable_x_ratelimit_headers=RateLimitXRateLimitHeadersRfcVersion.DRAFT_VERSION_03,
        response_headers_to_add=[_retry_after()],
        rate_limit_service=service)
    return HttpFilter(name="envoy.filters.http.ratelimit", typed_config=AnyMessage.pack(limiter))


def rate_limit_descriptors() -> list[RateLimit]:
    """[tenant] and [tenant, method]: tenant from ext_authz's dynamic metadata. A request
    without a tenant (denied before) produces no descriptor."""
    tenant = RateLimitAction(metadata=RateLimitActionMetaData(
        descriptor_key="tenant", source=RateLimitActionMetaDataSource.DYNAMIC,
        metadata_key=MetadataKey(key=EXT_AUTHZ_FILTER,
                                 path=[MetadataKeyPathSegment(key="tenant")])))
    method = RateLimitAction(request_headers=RateLimitActionRequestHeaders(
        header_name=":method", descriptor_key="method"))
    return [RateLimit(actions=[tenant]), RateLimit(actions=[tenant, method])]


def _access_log() -> AccessLog:
    fmt = SubstitutionFormatString(
        json_format=Struct.from_dict(ACCESS_LOG_FIELDS),
        formatters=[TypedExtensionConfig(name="envoy.formatter.req_without_query",
                                         typed_config=AnyMessage.pack(ReqWithoutQuery()))])
    return AccessLog(name="envoy.access_loggers.stdout",
                     typed_config=AnyMessage.pack(StdoutAccessLog(log_format=fmt)))


def _route_timeout(seconds: float) -> datetime.timedelta:
    # Envoy reads a route timeout of 0 as none at all (streaming, long polls), though
    # stream_idle_timeout still ends a stream idle for IDLE_TIMEOUT; left unset it would be
    # Envoy's 15 s, so 0 is written out.
    return datetime.timedelta(0) if seconds == 0 else _seconds(seconds, "--route-timeout")


def _connection_manager(config: Config, options: EnvoyOptions, domain: str | None) -> Filter:
    authz_timeout = _seconds(authz_timeout_for(config, options), "--authz-timeout")
    route = Route(name="app", match=RouteMatch(prefix="/"), route=RouteAction(
        cluster=APP_CLUSTER, timeout=_route_timeout(options.route_timeout),
        rate_limits=rate_limit_descriptors() if domain is not None else []))
    filters = []
    if client_limit := _client_limit_filter(options):
        filters.append(client_limit)
    filters.append(_ext_authz(config, authz_timeout))
    if domain is not None:
        filters.append(_rate_limit_filter(config, domain, authz_timeout))
    filters.append(HttpFilter(name="envoy.filters.http.router",
                              typed_config=AnyMessage.pack(Router())))
    manager = HttpConnectionManager(
        stat_prefix="ingress", codec_type=HttpConnectionManagerCodecType.AUTO,
        route_config=RouteConfiguration(name="local", virtual_hosts=[
            VirtualHost(name="app", domains=["*"], routes=[route])]),
        http_filters=filters,
        early_header_mutation_extensions=[_early_header_mutation(config)],
        # Check sees the path the app will see: RFC 3986 normalized (`..`, `.`), `//` merged,
        # and an encoded slash or backslash refused outright (see docs/envoy.md).
        normalize_path=True, merge_slashes=True,
        path_with_escaped_slashes_action=(
            HttpConnectionManagerPathWithEscapedSlashesAction.REJECT_REQUEST),
        # `x_tenant_id` becomes HTTP_X_TENANT_ID in CGI/WSGI stacks, exactly like x-tenant-id,
        # and would slip past the header strip: refuse any header with an underscore.
        common_http_protocol_options=HttpProtocolOptions(
            headers_with_underscores_action=(
                HttpProtocolOptionsHeadersWithUnderscoresAction.REJECT_REQUEST),
            # A connection that never sends a byte has no request for request_headers_timeout
            # to time: Envoy's default kept it an hour. Longer than the 60 s most load
            # balancers keep an idle connection, so they close first and never reuse one
            # Envoy is closing.
            idle_timeout=IDLE_TIMEOUT),
        # x-forwarded-for from the client is not trusted; only the entries that the proxies
        # in front (--xff-num-trusted-hops) appended, read from the right.
        use_remote_address=True, xff_num_trusted_hops=_trusted_hops(options),
        # Envoy's edge defaults wait forever for headers: a client dripping them one byte at a
        # time holds a connection indefinitely (seen in this project's pentest). 10 s and the
        # HTTP/2 stream and window limits are what Envoy's edge best-practice guide sets.
        request_headers_timeout=datetime.timedelta(seconds=10),
        # The route timeout starts once the request is complete: a client whose Check passed
        # could drip its body for ever, holding a stream and a connection to the app.
        stream_idle_timeout=IDLE_TIMEOUT, request_timeout=IDLE_TIMEOUT,
        http2_protocol_options=Http2ProtocolOptions(
            max_concurrent_streams=100, initial_stream_window_size=65536,
            initial_connection_window_size=1048576),
        access_log=[_access_log()] if options.access_log else [])
    return Filter(name="envoy.filters.network.http_connection_manager",
                  typed_config=AnyMessage.pack(manager))


def build_bootstrap(config: Config, options: EnvoyOptions) -> Bootstrap:
    return _build(config, options)[0]


def _build(config: Config, options: EnvoyOptions) -> tuple[Bootstrap, list[SdsFile]]:
    """The bootstrap and the SDS files it names (none without --authz-tls-ca)."""
    domain = rate_limit_domain(config, options)
    listen = options.listen or DEFAULT_LISTEN[options.mode]
    listener = Listener(name="ingress", address=_bind_socket(listen, "--listen"),
                        per_connection_buffer_limit_bytes=CONNECTION_BUFFER_BYTES,
                        filter_chains=[FilterChain(
                            filters=[_connection_manager(config, options, domain)])])
    authz, upstream = authz_address(config, options), _socket(options.upstream, "--upstream")
    tls, sds = authz_transport(options, authz)
    clusters = [
        # One cluster for Check and ShouldRateLimit: its TLS covers both.
        _cluster(AUTHZ_CLUSTER, authz, http2=True, dns=_needs_dns(authz), transport_socket=tls),
        _cluster(APP_CLUSTER, upstream, http2=False, dns=_needs_dns(upstream)),
    ]
    # Without a cap, silent connections could be opened until Envoy runs out of descriptors
    # (in sidecar mode taking the app's only entrance with it); past it Envoy refuses new ones.
    connections = ResourceMonitor(
        name="envoy.resource_monitors.global_downstream_max_connections",
        typed_config=AnyMessage.pack(DownstreamConnectionsConfig(
            max_active_downstream_connections=_max_connections(options))))
    return Bootstrap(
        node=Node(id=SDS_NODE, cluster=SDS_NODE) if tls is not None else None,  # SDS needs it
        admin=Admin(address=_admin_socket(options.admin)),
        static_resources=BootstrapStaticResources(listeners=[listener], clusters=clusters),
        overload_manager=OverloadManager(resource_monitors=[connections])), sds


def _max_connections(options: EnvoyOptions) -> int:
    # An int64 in Envoy's API (greater than 0): past it the message type refused the value
    # with a pydantic traceback.
    count = options.max_connections
    if not 1 <= count <= 2**63 - 1:
        raise EnvoyConfigError(f"--max-connections: must be from 1 to {2**63 - 1}, got {count}")
    return count


def bootstrap_dict(config: Config, options: EnvoyOptions) -> dict[str, Any]:
    return _as_dict(build_bootstrap(config, options))


def _as_dict(bootstrap: Bootstrap) -> dict[str, Any]:
    rendered = bootstrap.to_dict(casing=Casing.SNAKE)
    # proto3 JSON leaves out fields at their default; spell out the fail-closed choice anyway so
    # a reader of the YAML sees it.
    for chain in rendered["static_resources"]["listeners"][0]["filter_chains"]:
        for http_filter in chain["filters"][0]["typed_config"]["http_filters"]:
            if http_filter["name"] == EXT_AUTHZ_FILTER:
                http_filter["typed_config"]["failure_mode_allow"] = False
    return rendered


@dataclass(frozen=True, slots=True)
class Rendered:
    """A bootstrap (YAML) and the SDS files it names (absolute path: YAML), to be written
    first: Envoy refuses to start while one is missing."""

    bootstrap: str
    sds: dict[str, str]


def render(config: Config, options: EnvoyOptions, *, source: str | None = None) -> str:
    """The bootstrap as YAML, with a header saying where it came from."""
    return render_files(config, options, source=source).bootstrap


def render_files(config: Config, options: EnvoyOptions, *,
                 source: str | None = None) -> Rendered:
    """render's bootstrap and the SDS files it names (none without --authz-tls-ca), from one
    reading of each TLS file."""
    bootstrap, sds = _build(config, options)
    header = ["# Envoy bootstrap rendered by `tenantgate envoy-config"
              + (f" {source}" if source else "") + f" --mode {options.mode}`.",
              "# Do not edit by hand: change the tenantgate config and render again."]
    body = yaml.safe_dump(_as_dict(bootstrap), sort_keys=False, default_flow_style=False,
                          width=100)
    return Rendered("\n".join(header) + "\n" + body, {f.path: f.render() for f in sds})
