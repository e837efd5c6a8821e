"""The listener's HTTP connection manager: its one route, the filters in order, the access
log, and the limits that keep a slow or dishonest client from holding a connection."""

from __future__ import annotations

import datetime

from tenantgate.config.envoy.filters import (
    EXT_AUTHZ_FILTER,
    authz_timeout_for,
    client_limit_filter,
    early_header_mutation,
    ext_authz_filter,
    rate_limit_descriptors,
    rate_limit_filter,
    trailer_strip_filter,
)
from tenantgate.config.envoy.generated import generated_imports
from tenantgate.config.envoy.options import (
    APP_CLUSTER,
    EnvoyConfigError,
    EnvoyOptions,
    duration,
)
from tenantgate.config.model import Config

with generated_imports():
    from envoy_data_plane.envoy.config.accesslog.v3 import AccessLog
    from envoy_data_plane.envoy.config.core.v3 import (
        Http2ProtocolOptions,
        HttpProtocolOptions,
        HttpProtocolOptionsHeadersWithUnderscoresAction,
        SubstitutionFormatString,
        TypedExtensionConfig,
    )
    from envoy_data_plane.envoy.config.listener.v3 import Filter
    from envoy_data_plane.envoy.config.route.v3 import (
        HeaderMatcher,
        Route,
        RouteAction,
        RouteActionMaxStreamDuration,
        RouteActionUpgradeConfig,
        RouteConfiguration,
        RouteMatch,
        VirtualHost,
    )
    from envoy_data_plane.envoy.extensions.access_loggers.stream.v3 import StdoutAccessLog
    from envoy_data_plane.envoy.extensions.filters.http.router.v3 import Router
    from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3 import (
        HttpConnectionManager,
        HttpConnectionManagerCodecType,
        HttpConnectionManagerPathWithEscapedSlashesAction,
        HttpFilter,
    )
    from envoy_data_plane.envoy.extensions.formatter.req_without_query.v3 import ReqWithoutQuery
    from envoy_data_plane.envoy.type.matcher.v3 import StringMatcher
    from envoy_data_plane.google.protobuf import Any as AnyMessage
    from envoy_data_plane.google.protobuf import Struct


# Envoy's edge best-practice guide: 32 KiB buffered per connection, streams and requests
# bounded in time (5 minutes; the route's own timeout still applies once a request is complete).
CONNECTION_BUFFER_BYTES = 32 * 1024
# HTTP/2 flow-control windows from the same guide: what one stream, and one connection, may
# have in flight unread (towards clients, and towards an HTTP/2 application).
STREAM_WINDOW_BYTES = 65536
CONNECTION_WINDOW_BYTES = 1048576
IDLE_TIMEOUT = datetime.timedelta(minutes=5)

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
    return datetime.timedelta(0) if seconds == 0 else duration(seconds, "--route-timeout")


def _app_action(options: EnvoyOptions, domain: str | None) -> RouteAction:
    return RouteAction(cluster=APP_CLUSTER, timeout=_route_timeout(options.route_timeout),
                       rate_limits=rate_limit_descriptors() if domain is not None else [])


def _websocket_route(config: Config, options: EnvoyOptions, domain: str | None) -> Route:
    """--websocket: the route a WebSocket handshake takes, the only one allowing the upgrade.
    Check runs once, on the handshake; the tunnel after the 101 carries its context, which
    expires after context.ttl. The stream is ended then (counted from its start, before Check
    signed the context, so before it expires): the client reconnects and passes Check again,
    which is also when a revoked key or an expired token takes effect."""
    action = _app_action(options, domain)
    # Upgrades are allowed on this route only, not on the connection manager: an upgrade whose
    # Upgrade header this match misses gets the app route, which refuses it (403), so no
    # upgraded stream escapes the bound (HCM-wide max_stream_duration would cut every request).
    action.upgrade_configs = [RouteActionUpgradeConfig(upgrade_type="websocket")]
    action.max_stream_duration = RouteActionMaxStreamDuration(
        max_stream_duration=duration(config.context.ttl, "context.ttl"))
    # Envoy compares upgrade types without case, so the match does too.
    upgrade = HeaderMatcher(name="upgrade",
                            string_match=StringMatcher(exact="websocket", ignore_case=True))
    return Route(name="websocket", match=RouteMatch(prefix="/", headers=[upgrade]),
                 route=action)


def http_connection_manager(config: Config, options: EnvoyOptions, domain: str | None) -> Filter:
    authz_timeout = duration(authz_timeout_for(config, options), "--authz-timeout")
    routes = [Route(name="app", match=RouteMatch(prefix="/"), route=_app_action(options, domain))]
    if options.websocket:  # first: routes match in order, and the app route takes every path
        routes.insert(0, _websocket_route(config, options, domain))
    filters = []
    if options.upstream_protocol != "http1":  # over HTTP/1.1 Envoy forwards no request trailers
        filters.append(trailer_strip_filter(config))
    if client_limit := client_limit_filter(options):
        filters.append(client_limit)
    filters.append(ext_authz_filter(config, authz_timeout))
    if domain is not None:
        filters.append(rate_limit_filter(config, domain, authz_timeout))
    filters.append(HttpFilter(name="envoy.filters.http.router",
                              typed_config=AnyMessage.pack(Router())))
    manager = HttpConnectionManager(
        stat_prefix="ingress", codec_type=HttpConnectionManagerCodecType.AUTO,
        route_config=RouteConfiguration(name="local", virtual_hosts=[
            VirtualHost(name="app", domains=["*"], routes=routes)]),
        http_filters=filters,
        early_header_mutation_extensions=[early_header_mutation(config)],
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
            max_concurrent_streams=100, initial_stream_window_size=STREAM_WINDOW_BYTES,
            initial_connection_window_size=CONNECTION_WINDOW_BYTES),
        access_log=[_access_log()] if options.access_log else [])
    return Filter(name="envoy.filters.network.http_connection_manager",
                  typed_config=AnyMessage.pack(manager))
