"""Why a TCP listener could not be added: gRPC's add_port says only that no address was."""

from __future__ import annotations

import socket


def bind_error(address: str) -> str | None:
    """Why bind(2) refuses a TCP `host:port`, asked after gRPC failed to add it (gRPC says
    only that no address was added); None when every address binds now (a race) or it cannot
    tell. Only after a failure: gRPC binds what it resolves, and one address binding is enough."""
    host, _, port = address.rpartition(":")
    try:
        found = socket.getaddrinfo(host.strip("[]") or None, int(port), type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except (OSError, ValueError):
        return None
    errors = []
    for family, kind, proto, _, sockaddr in found:
        try:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC's
                probe.bind(sockaddr)
        except OSError as exc:
            errors.append(exc.strerror or str(exc))
        else:
            return None
    return errors[0] if errors else None
