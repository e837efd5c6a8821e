"""The addresses in the bootstrap: host:port checks, where Envoy listens, where its admin
listens, and where it reaches tenantgate."""

from __future__ import annotations

import ipaddress
import os
import re

from tenantgate.config.addresses import check_socket_path_length
from tenantgate.config.envoy.generated import generated_imports
from tenantgate.config.envoy.options import EnvoyConfigError, EnvoyOptions
from tenantgate.config.model import Config

with generated_imports():
    from envoy_data_plane.envoy.config.core.v3 import Address, Pipe, SocketAddress


# A DNS name: labels of letters, digits and inner hyphens (RFC 1123), and underscores, which
# resolvers and Envoy's DNS accept and Docker's networks use in service names.
DNS_NAME = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9_-]{1,63}(?<!-))*\.?")


def split_host_port(value: str, what: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    # ASCII digits only: int() reads any Unicode digit, so full-width `009` was port 9.
    if not (sep and host and port.isascii() and port.isdigit()):
        raise EnvoyConfigError(f"{what}: must be host:port, got {value!r}")
    if not 0 < int(port) < 65536:
        raise EnvoyConfigError(f"{what}: the port must be from 1 to 65535, got {value!r}")
    # Anything else went into the bootstrap as it was (a newline, a space, a slash).
    if not (is_ip(host) or (len(host) <= 253 and DNS_NAME.fullmatch(host))):
        raise EnvoyConfigError(f"{what}: the host must be an IP address or a DNS name, got "
                               f"{value!r}")
    return host, int(port)


def connect_address(value: str, what: str) -> Address:
    """A cluster's target: an address to connect to, never one that means "every address"."""
    host, port = split_host_port(value, what)
    if is_ip(host) and ipaddress.ip_address(host).is_unspecified:
        raise EnvoyConfigError(f"{what}: {host} means every local address, which is no "
                               f"address to connect to, got {value!r}")
    return Address(socket_address=SocketAddress(address=host, port_value=port))


def listen_address(value: str, what: str) -> Address:
    # Envoy resolves no name for an address it listens on (a listener, admin): a name such as
    # localhost passed here and Envoy then refused the whole bootstrap ("malformed IP address").
    host, port = split_host_port(value, what)
    if not is_ip(host):
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


def admin_address(value: str) -> Address:
    # Envoy's admin interface has no authentication and can drain, quit or change runtime
    # values: it must never listen beyond loopback (expose stats through a listener instead).
    if value.startswith(ADMIN_UNIX_PREFIX):
        return Address(pipe=Pipe(path=_admin_socket_path(value), mode=ADMIN_SOCKET_MODE))
    address = listen_address(value, "--admin")
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


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def authz_address(config: Config, options: EnvoyOptions) -> Address:
    """Sidecar: the Unix socket when the config has one (no TCP port to expose); front: TCP."""
    if options.mode == "sidecar" and config.listen.uds:
        if options.authz:  # it would be dropped without a word
            raise EnvoyConfigError(f"--authz: sidecar mode calls tenantgate over listen.uds "
                                   f"({config.listen.uds}); --authz is for --mode front")
        return Address(pipe=Pipe(path=config.listen.uds))
    if options.authz:
        return connect_address(options.authz, "--authz")
    if config.listen.grpc is None:
        raise EnvoyConfigError("front mode needs --authz host:port (the config has no "
                               "listen.grpc)")
    host, _ = split_host_port(config.listen.grpc, "listen.grpc")
    if is_ip(host) and ipaddress.ip_address(host).is_unspecified:
        # tenantgate listens on every address; which one Envoy reaches it by, only you know.
        raise EnvoyConfigError(f"listen.grpc {config.listen.grpc} listens on every address, "
                               f"which Envoy cannot connect to: give --authz HOST:PORT, where "
                               f"Envoy reaches tenantgate")
    return connect_address(config.listen.grpc, "listen.grpc")


def is_loopback(host: str) -> bool:
    if is_ip(host):
        return ipaddress.ip_address(host).is_loopback
    return host.lower().rstrip(".") == "localhost"
