"""The health-only listener (listen.health): grpc.health.v1 in plaintext and nothing else, for
probes that speak no TLS (Kubernetes' gRPC probes) beside a listen.grpc served over TLS."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2_grpc

from tenantgate.bind_error import bind_error

# A health request is one service name: nothing legitimate comes near this.
MAX_RECEIVE_BYTES = 4096


class HealthListenFailed(Exception):
    """listen.health could not bind: a start-up failure, as one of listen.grpc's."""


async def start_health_listener(servicer: health.aio.HealthServicer,
                                address: str) -> grpc.aio.Server:
    """A started server on `address` answering `servicer`, the App's own, so that it says
    what health on listen.grpc says (serving, draining). Check and ShouldRateLimit are not
    registered: a caller here gets UNIMPLEMENTED, never a decision, so an Envoy pointed at
    this plaintext port by mistake fails closed."""
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0),
                                      ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES)])
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError:
        port = 0
    if port == 0:
        await server.stop(None)  # created, never started: shut it down, not leak it
        cause = bind_error(address)
        raise HealthListenFailed(f"listen.health {address}: cannot listen: {cause}" if cause
                                 else f"listen.health {address}: cannot listen (address in "
                                 "use, or not allowed)")
    await server.start()
    return server
