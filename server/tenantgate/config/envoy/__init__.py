"""The Envoy bootstrap that matches a tenantgate config (`tenantgate envoy-config`).

options.py             EnvoyOptions, EnvoyConfigError, the names and durations shared below
addresses.py           host:port checks; the listener's, the admin's and tenantgate's addresses
tls.py                 TLS towards tenantgate: the transport socket and its file-based SDS files
filters.py             the HTTP filters: header strip, client limit, ext_authz, rate limit
connection_manager.py  the HTTP connection manager: route, filter order, access log, limits
bootstrap.py           clusters, listener, admin, connection cap; build and render
generated.py           importing envoy-data-plane's messages without their warning

Here are the names the CLI, the tests and the benchmarks use."""

from tenantgate.config.envoy.bootstrap import (
    Rendered,
    bootstrap_dict,
    build_bootstrap,
    render,
    render_files,
)
from tenantgate.config.envoy.options import EnvoyConfigError, EnvoyOptions, Mode

__all__ = [
    "EnvoyConfigError",
    "EnvoyOptions",
    "Mode",
    "Rendered",
    "bootstrap_dict",
    "build_bootstrap",
    "render",
    "render_files",
]
