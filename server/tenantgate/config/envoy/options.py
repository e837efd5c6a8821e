"""What `tenantgate envoy-config` takes besides the tenantgate config: the options, the error
that names a wrong one, and the names and durations every part of the bootstrap shares."""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass
from typing import Literal

from tenantgate.config.quota import Rate
from tenantgate.config.types import DURATION_MAX_SECONDS

Mode = Literal["sidecar", "front"]
# How Envoy speaks to the application: HTTP/1.1; h2c with prior knowledge (gRPC, h2c apps);
# or as the client spoke to Envoy (HTTP/1.1 stays HTTP/1.1, HTTP/2 becomes h2c).
UpstreamProtocol = Literal["http1", "http2", "downstream"]
UPSTREAM_PROTOCOLS: tuple[UpstreamProtocol, ...] = ("http1", "http2", "downstream")
# The clusters the listener's filters and route name (bootstrap.py defines them).
AUTHZ_CLUSTER = "tenantgate"
APP_CLUSTER = "app"
DEFAULT_LISTEN: dict[Mode, str] = {"sidecar": "0.0.0.0:15000", "front": "0.0.0.0:8080"}


class EnvoyConfigError(ValueError):
    """The options cannot make a bootstrap for this config (one line, names the option)."""


@dataclass(frozen=True, slots=True)
class EnvoyOptions:
    mode: Mode = "sidecar"
    listen: str | None = None  # host:port of the HTTP listener; default by mode
    upstream: str = "127.0.0.1:8000"  # the application Envoy routes allowed requests to
    upstream_protocol: UpstreamProtocol = "http1"
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
    # WebSocket upgrades (HTTP/1.1 handshakes): Check runs on the handshake only, so the upgraded
    # stream is ended after context.ttl (connection_manager.py). Off: Envoy refuses them (403).
    websocket: bool = False
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
        if self.upstream_protocol not in UPSTREAM_PROTOCOLS:  # the CLI's choices check it too
            raise EnvoyConfigError(f"--upstream-protocol: must be one of "
                                   f"{', '.join(UPSTREAM_PROTOCOLS)}, got "
                                   f"{self.upstream_protocol!r}")


# Envoy's timers count milliseconds (less renders as 0s, which Envoy reads as no timeout).
_MIN_SECONDS = 0.001


def duration(value: float, what: str) -> datetime.timedelta:
    if not (math.isfinite(value) and _MIN_SECONDS <= value <= DURATION_MAX_SECONDS):
        raise EnvoyConfigError(f"{what}: must be a number of seconds from {_MIN_SECONDS} "
                               f"to {DURATION_MAX_SECONDS}, got {value!r}")
    return datetime.timedelta(seconds=value)
