"""The Envoy bootstrap that matches a tenantgate config, built from envoy-data-plane's typed
messages (a wrong field name or type fails here, not in Envoy at deploy time): the clusters,
the listener, the admin, the connection cap, and the rendered YAML."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

import yaml
from betterproto2 import Casing

from tenantgate.config.envoy.addresses import (
    admin_address,
    authz_address,
    connect_address,
    is_ip,
    listen_address,
)
from tenantgate.config.envoy.connection_manager import (
    CONNECTION_BUFFER_BYTES,
    CONNECTION_WINDOW_BYTES,
    STREAM_WINDOW_BYTES,
    http_connection_manager,
)
from tenantgate.config.envoy.filters import EXT_AUTHZ_FILTER, rate_limit_domain
from tenantgate.config.envoy.generated import generated_imports
from tenantgate.config.envoy.options import (
    APP_CLUSTER,
    AUTHZ_CLUSTER,
    DEFAULT_LISTEN,
    EnvoyConfigError,
    EnvoyOptions,
    duration,
)
from tenantgate.config.envoy.tls import SDS_NODE, SdsFile, authz_transport
from tenantgate.config.model import Config

with generated_imports():
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
    from envoy_data_plane.envoy.config.core.v3 import (
        Address,
        Http1ProtocolOptions,
        Http2ProtocolOptions,
        KeepaliveSettings,
        Node,
        TransportSocket,
    )
    from envoy_data_plane.envoy.config.endpoint.v3 import (
        ClusterLoadAssignment,
        Endpoint,
        LbEndpoint,
        LocalityLbEndpoints,
    )
    from envoy_data_plane.envoy.config.listener.v3 import FilterChain, Listener
    from envoy_data_plane.envoy.config.overload.v3 import OverloadManager, ResourceMonitor
    from envoy_data_plane.envoy.extensions.resource_monitors.downstream_connections.v3 import (
        DownstreamConnectionsConfig,
    )
    from envoy_data_plane.envoy.extensions.upstreams.http.v3 import (
        HttpProtocolOptions as UpstreamHttpProtocolOptions,
    )
    from envoy_data_plane.envoy.extensions.upstreams.http.v3 import (
        HttpProtocolOptionsExplicitHttpConfig,
        HttpProtocolOptionsUseDownstreamHttpConfig,
    )
    from envoy_data_plane.google.protobuf import Any as AnyMessage


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


def _authz_protocol(address: Address) -> UpstreamHttpProtocolOptions:
    # gRPC needs HTTP/2 towards tenantgate.
    return UpstreamHttpProtocolOptions(explicit_http_config=HttpProtocolOptionsExplicitHttpConfig(
        http2_protocol_options=_grpc_protocol(address)))


# Envoy carries the calls of all tenants on shared HTTP/2 connections to the app. A client that
# never reads its responses leaves a full stream window unread on each of its streams, and
# streams unread enough to fill the connection window stop the app sending to anyone. So the
# invariant: connection window >= streams per connection x stream window. Stalled streams alone
# can then never exhaust it; past the limit Envoy's pool opens another connection.
APP_STREAMS_PER_CONNECTION = CONNECTION_WINDOW_BYTES // STREAM_WINDOW_BYTES


def _app_protocol(options: EnvoyOptions) -> UpstreamHttpProtocolOptions | None:
    """How Envoy speaks to the app; None leaves Envoy's default, HTTP/1.1 (the rendered
    output stays as it was before there was a choice)."""
    if options.upstream_protocol == "http1":
        return None
    # A gRPC or h2c app gets h2c with prior knowledge (no TLS, so no ALPN to agree on it),
    # with the windows Envoy's clients get: what one stream may hold unread stays bounded.
    http2 = Http2ProtocolOptions(initial_stream_window_size=STREAM_WINDOW_BYTES,
                                 initial_connection_window_size=CONNECTION_WINDOW_BYTES,
                                 max_concurrent_streams=APP_STREAMS_PER_CONNECTION)
    if options.upstream_protocol == "http2":
        return UpstreamHttpProtocolOptions(
            explicit_http_config=HttpProtocolOptionsExplicitHttpConfig(
                http2_protocol_options=http2))
    return UpstreamHttpProtocolOptions(
        use_downstream_protocol_config=HttpProtocolOptionsUseDownstreamHttpConfig(
            http_protocol_options=Http1ProtocolOptions(), http2_protocol_options=http2))


def _cluster(name: str, address: Address, *, protocol: UpstreamHttpProtocolOptions | None,
             dns: bool = False, transport_socket: TransportSocket | None = None) -> Cluster:
    assignment = ClusterLoadAssignment(cluster_name=name, endpoints=[LocalityLbEndpoints(
        lb_endpoints=[LbEndpoint(endpoint=Endpoint(address=address))])])
    cluster = Cluster(
        name=name, connect_timeout=duration(1.0, "connect_timeout"), load_assignment=assignment,
        type=ClusterDiscoveryType.STRICT_DNS if dns else ClusterDiscoveryType.STATIC,
        transport_socket=transport_socket)
    if dns:
        # Envoy's AUTO asks for IPv6 first: `localhost` became ::1 and an app (or tenantgate)
        # on 127.0.0.1 got 503 on every request. IPv4 first, IPv6 when a name has no A record;
        # not ALL, which would make ::1 and 127.0.0.1 two hosts and fail every other request.
        cluster.dns_lookup_family = ClusterDnsLookupFamily.V4_PREFERRED
    if protocol is not None:
        cluster.typed_extension_protocol_options = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": AnyMessage.pack(protocol)}
    return cluster


def _app_cluster(options: EnvoyOptions) -> Cluster:
    upstream = connect_address(options.upstream, "--upstream")
    cluster = _cluster(APP_CLUSTER, upstream, protocol=_app_protocol(options),
                       dns=_needs_dns(upstream))
    # Bounded buffering per connection, as towards clients.
    cluster.per_connection_buffer_limit_bytes = CONNECTION_BUFFER_BYTES
    return cluster


def _needs_dns(address: Address) -> bool:
    # A STATIC cluster takes IPs only: a name (a Kubernetes Service) needs STRICT_DNS.
    return address.socket_address is not None and not is_ip(address.socket_address.address)


def build_bootstrap(config: Config, options: EnvoyOptions) -> Bootstrap:
    return _build(config, options)[0]


def _build(config: Config, options: EnvoyOptions) -> tuple[Bootstrap, list[SdsFile]]:
    """The bootstrap and the SDS files it names (none without --authz-tls-ca)."""
    domain = rate_limit_domain(config, options)
    listen = options.listen or DEFAULT_LISTEN[options.mode]
    listener = Listener(name="ingress", address=listen_address(listen, "--listen"),
                        per_connection_buffer_limit_bytes=CONNECTION_BUFFER_BYTES,
                        filter_chains=[FilterChain(
                            filters=[http_connection_manager(config, options, domain)])])
    authz = authz_address(config, options)
    tls, sds = authz_transport(options, authz)
    clusters = [
        # One cluster for Check and ShouldRateLimit: its TLS covers both.
        _cluster(AUTHZ_CLUSTER, authz, protocol=_authz_protocol(authz), dns=_needs_dns(authz),
                 transport_socket=tls),
        _app_cluster(options),
    ]
    # Without a cap, silent connections could be opened until Envoy runs out of descriptors
    # (in sidecar mode taking the app's only entrance with it); past it Envoy refuses new ones.
    connections = ResourceMonitor(
        name="envoy.resource_monitors.global_downstream_max_connections",
        typed_config=AnyMessage.pack(DownstreamConnectionsConfig(
            max_active_downstream_connections=_max_connections(options))))
    return Bootstrap(
        node=Node(id=SDS_NODE, cluster=SDS_NODE) if tls is not None else None,  # SDS needs it
        admin=Admin(address=admin_address(options.admin)),
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
