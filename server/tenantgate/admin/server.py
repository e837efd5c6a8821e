"""The admin listener: its own grpc.aio server, refused without the admin token or client
certificate; started by the App only when `admin` is configured."""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import grpc

from tenantgate.admin.servicer import ApiKeyAdminServicer
from tenantgate.bind_error import bind_error
from tenantgate.config.addresses import grpc_unix_path
from tenantgate.config.tls import RotatingCredentials
from tenantgate.errors import ConfigError
from tenantgate.observe.apikeys import ADMIN_AUTH_FAILURES
from tenantgate.observe.throttle import Throttle
from tenantgate.unix_socket import BoundSocket, SocketInUse, remove_stale_socket

if TYPE_CHECKING:
    from tenantgate.config.apikeys import AdminConfig
    from tenantgate.runtime import Runtime

log = logging.getLogger("tenantgate.admin")
# How long a stop waits, at least, for key changes still under way: a few store round trips,
# each bounded by api_keys.redis_timeout (0.25 s by default; SETTLE_ROUND_TRIPS of it if longer).
CHANGE_SETTLE_SECONDS = 10.0
SETTLE_ROUND_TRIPS = 4


def _fingerprint(token: bytes) -> bytes:
    # Comparing fixed-length digests keeps the compare constant-time whatever the lengths.
    return hashlib.sha256(token).digest()


async def _refuse(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, "admin credential required")
    raise AssertionError("abort raises")  # pragma: no cover


_REFUSED = grpc.unary_unary_rpc_method_handler(_refuse)


class AdminTokenAuth(grpc.aio.ServerInterceptor):
    """Every call must carry `authorization: Bearer <admin token>`; nothing else is looked at."""

    def __init__(self, token: bytes) -> None:
        self._expected = _fingerprint(token)
        self._refusals_said = Throttle(60.0)

    def authorized(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> bool:
        values = [v for k, v in metadata or () if k.lower() == "authorization"]
        if len(values) != 1 or not isinstance(values[0], str):
            presented = b""
        else:
            scheme, _, token = values[0].partition(" ")
            presented = token.strip().encode() if scheme.lower() == "bearer" else b""
        return hmac.compare_digest(_fingerprint(presented), self._expected) and bool(presented)

    async def intercept_service(
            self, continuation: Callable[[grpc.HandlerCallDetails],
                                         Awaitable[grpc.RpcMethodHandler]],
            details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        if self.authorized(details.invocation_metadata):
            return await continuation(details)
        # Someone is guessing at, or misconfigured with, the credential that mints API keys.
        ADMIN_AUTH_FAILURES.inc()
        if self._refusals_said.ready():
            log.warning("admin API: a call without the admin token was refused (said once a "
                        "minute; tenantgate_admin_auth_failures_total counts each)")
        return _REFUSED


class AdminListenFailed(Exception):
    """The admin listener could not bind: a start-up failure, like one of listen.*, not a
    config error (check-config passed the same config)."""


class AdminListener:
    """The admin gRPC server, its admin.tls credentials (the App reads their files again, as
    listen.tls's), and the Unix socket it bound, if any: stop() unlinks that only while it is
    still ours, not a socket a successor bound at the path meanwhile."""

    def __init__(self, server: grpc.aio.Server, bound: BoundSocket | None,
                 servicer: ApiKeyAdminServicer, settle_seconds: float,
                 tls: RotatingCredentials | None) -> None:
        self.server = server
        self.tls = tls
        self._bound = bound
        self._servicer = servicer
        self._settle_seconds = settle_seconds

    async def stop(self, grace: float | None) -> None:
        await self.server.stop(grace)
        # A key change whose caller gave up runs on (shielded): it must finish, and write its
        # audit line, before the runtime it uses is closed.
        await self._servicer.settle(self._settle_seconds)
        bound, self._bound = self._bound, None
        if bound is not None:
            bound.unlink_if_ours()


async def start_admin(get_runtime: Callable[[], Runtime], cfg: AdminConfig) -> AdminListener:
    if get_runtime().api_keys is None:
        raise ConfigError(["admin: the admin API manages API keys; configure api_keys too"])
    socket_path = grpc_unix_path(cfg.listen)
    if socket_path is not None:
        # As listen.uds: gRPC would unlink a live server's socket and bind over it, taking
        # its admin calls (and leaving it without a socket once this process stops).
        try:
            remove_stale_socket(socket_path, "admin.listen")
        except SocketInUse as exc:
            raise AdminListenFailed(str(exc)) from None
    # Read (and checked) before the server exists: a bad file must not leave one behind.
    tls = RotatingCredentials(cfg.tls, "admin.tls") if cfg.tls is not None else None
    interceptors = [AdminTokenAuth(cfg.token.value)] if cfg.token is not None else []
    server = grpc.aio.server(interceptors=interceptors, options=[("grpc.so_reuseport", 0)])
    servicer = ApiKeyAdminServicer(get_runtime)
    servicer.add_to_server(server)
    try:
        if tls is None:
            port = server.add_insecure_port(cfg.listen)
        else:
            port = server.add_secure_port(cfg.listen, tls.credentials)
    except RuntimeError:
        port = 0
    if port == 0:
        await server.stop(None)  # never started, but created: shut it down, not leak it
        cause = None if cfg.listen.startswith("unix:") else bind_error(cfg.listen)
        raise AdminListenFailed(f"admin.listen {cfg.listen}: cannot listen: {cause}" if cause
                                else f"admin.listen {cfg.listen}: cannot listen (address in "
                                "use, or no such directory, or not allowed)")
    bound = BoundSocket.of(socket_path) if socket_path is not None else None
    await server.start()
    api_keys = get_runtime().config.api_keys
    round_trip = api_keys.redis_timeout if api_keys is not None else 0.0
    return AdminListener(server, bound, servicer,
                         max(CHANGE_SETTLE_SECONDS, SETTLE_ROUND_TRIPS * round_trip), tls)
