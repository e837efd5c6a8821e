"""The Python gRPC floor: a grpc.aio Check handler that allows everything and does nothing else.

Same server options and event loop as tenantgate, so the difference is tenantgate's own work.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import grpc
from envoy.service.auth.v3 import external_auth_pb2_grpc
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse
from google.rpc import code_pb2, status_pb2

_OK = CheckResponse(status=status_pb2.Status(code=code_pb2.OK))


class NoopAuthorization(external_auth_pb2_grpc.AuthorizationServicer):
    def __init__(self, spin: int = 0) -> None:
        self._spin = spin

    async def Check(self, request: CheckRequest, context: object) -> CheckResponse:
        for _ in range(self._spin):  # --spin: handler work of a known tight-loop cost
            pass
        return _OK


async def serve(address: str, spin: int = 0) -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(NoopAuthorization(spin), server)
    server.add_insecure_port(address)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)


def main() -> None:
    parser = argparse.ArgumentParser(description="no-op ext_authz Check server (benchmark floor)")
    parser.add_argument("--listen", required=True, help="host:port or unix:PATH")
    parser.add_argument("--no-uvloop", action="store_true")
    parser.add_argument("--spin", type=int, default=0, metavar="N",
                        help="run an empty N-step Python loop in every Check, to measure what "
                             "handler work costs under load against its cost in a tight loop")
    args = parser.parse_args()
    factory = None
    if not args.no_uvloop:
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve(args.listen, args.spin))


if __name__ == "__main__":
    main()
