"""The ApiKeyAdmin servicer: admin messages in, KeyManager calls, admin messages out."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message
from redis.exceptions import RedisError

from tenantgate._gen.tenantgate.admin.v1 import apikeys_pb2 as pb
from tenantgate._gen.tenantgate.admin.v1 import apikeys_pb2_grpc as pb_grpc
from tenantgate.decision import Reason
from tenantgate.identity.apikey_manager import KeyAdminError, KeyManager, page_token
from tenantgate.identity.apikeys import STORE_DOWN_WARN_EVERY
from tenantgate.observe import store_errors
from tenantgate.observe.throttle import Throttle

if TYPE_CHECKING:
    from tenantgate.identity.apikey_store import KeyRecord
    from tenantgate.runtime import Runtime

log = logging.getLogger("tenantgate.admin")
T = TypeVar("T")
_INT64_MAX = 2**63 - 1
# ListKeys pages: one response of every key a tenant ever had (rotations leave expired keys
# behind) passed a client's default 4 MiB receive limit at about 500 keys of 64 long scopes.
PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_PAGE_BYTES = 1024 * 1024
_ENTRY_OVERHEAD = 4  # a repeated entry's tag and length prefix (ApiKey messages are < 2 MiB)
_SERVICE = pb.DESCRIPTOR.services_by_name["ApiKeyAdmin"]
_CODES = {"invalid_argument": grpc.StatusCode.INVALID_ARGUMENT,
          "not_found": grpc.StatusCode.NOT_FOUND,
          "failed_precondition": grpc.StatusCode.FAILED_PRECONDITION}


def to_message(record: KeyRecord) -> pb.ApiKey:
    return pb.ApiKey(key_id=record.key_id, tenant=record.tenant, name=record.name,
                     scopes=list(record.scopes), created_at=_int64(record.created_at),
                     expires_at=_int64(record.expires_at), revoked=record.revoked,
                     revoked_at=_int64(record.revoked_at),
                     last_used_at=_int64(record.last_used_at),
                     replaces_key_id=record.replaces)


def _int64(stamp: int) -> int:
    # Records stored before expiries were bounded can hold more than int64: one such key must
    # not make its whole tenant unlistable.
    return max(-_INT64_MAX - 1, min(stamp, _INT64_MAX))


def list_page(records: Sequence[KeyRecord], limit: int) -> pb.ListKeysResponse:
    """The first `limit` records, fewer if they would pass MAX_PAGE_BYTES (one at least),
    and the token of the next page if any are left."""
    response = pb.ListKeysResponse()
    size = 0
    for record in records[:limit]:
        message = to_message(record)
        size += message.ByteSize() + _ENTRY_OVERHEAD
        if response.keys and size > MAX_PAGE_BYTES:
            break
        response.keys.append(message)
    if len(response.keys) < len(records):
        response.next_page_token = page_token(records[len(response.keys) - 1])
    return response


def _parse_or_none(message_type: type[Message]) -> Callable[[bytes], Message | None]:
    # Raised out of a request deserializer, a DecodeError (a string field that is not UTF-8,
    # corrupt bytes) makes gRPC answer UNKNOWN with the exception's text and log a traceback,
    # per call. None is answered by _refuse_unparsed instead, as authz.parse_check_request.
    def parse(data: bytes) -> Message | None:
        try:
            return message_type.FromString(data)
        except DecodeError:
            return None
    return parse


def _refuse_unparsed(method: Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]
                     ) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]:
    async def handle(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        if request is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                "the request is not a valid protobuf message")
        return await method(request, context)
    return handle


class ApiKeyAdminServicer(pb_grpc.ApiKeyAdminServicer):
    def __init__(self, get_runtime: Callable[[], Runtime]) -> None:
        self._get_runtime = get_runtime
        # Key changes under way, shielded from their callers: the listener's stop waits for
        # them before the runtime they use is closed.
        self._changes: set[asyncio.Task[Any]] = set()
        self._orphans: set[asyncio.Task[Any]] = set()  # whose callers have gone
        self._failures_said = Throttle(60.0)
        self._store_failures_said = Throttle(STORE_DOWN_WARN_EVERY)

    async def settle(self, timeout: float) -> None:
        """Wait, at most `timeout`, for the key changes still under way. Past it the runtime
        is closed under those left: each fails against the closed store (a write already sent
        may still land without its audit line), which this warning and _settled say."""
        if self._changes:
            _, running = await asyncio.wait(set(self._changes), timeout=timeout)
            if running:
                log.warning("admin API: stopping with %d key change(s) still waiting on the "
                            "store after %g s", len(running), timeout)

    def _settled(self, task: asyncio.Task[Any]) -> None:
        self._changes.discard(task)
        if task in self._orphans:
            self._orphans.discard(task)
            exc = None if task.cancelled() else task.exception()  # retrieved here: its caller
            if exc is not None and self._failures_said.ready():  # is not there to see it
                log.warning("admin API: a key change whose client had gone failed: %s",
                            exc if isinstance(exc, KeyAdminError) else repr(exc))

    def add_to_server(self, server: grpc.aio.Server) -> None:
        """As the generated add_ApiKeyAdminServicer_to_server, but a request protobuf cannot
        parse is INVALID_ARGUMENT. The admin interceptor runs before any parsing, so a caller
        without the credential is refused UNAUTHENTICATED whatever it sent."""
        handlers = {method.name: grpc.unary_unary_rpc_method_handler(
            _refuse_unparsed(getattr(self, method.name)),
            request_deserializer=_parse_or_none(getattr(pb, method.input_type.name)),
            response_serializer=getattr(pb, method.output_type.name).SerializeToString)
            for method in _SERVICE.methods}
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(_SERVICE.full_name, handlers),))
        server.add_registered_method_handlers(_SERVICE.full_name, handlers)

    async def _run(self, context: grpc.aio.ServicerContext[Any, Any],
                   action: Callable[[KeyManager], Awaitable[T]],
                   changed: Callable[[T], tuple[str, KeyRecord]] | None = None) -> T:
        """`changed`: for a call that changes a key, the audit event and the key's record.
        Such a call is shielded: a client that cancels while the store runs it must not leave
        the key changed without its audit line."""
        # Pinned like a Check: a reload closes this runtime only after the work has ended
        # (which unpins it), even when the call was cancelled before.
        runtime = self._get_runtime().pin()
        # Read now: once a call is cancelled, its context must not be touched again.
        peer = context.peer() if changed is not None else ""
        work = _work(runtime, action, changed, peer)
        try:
            if changed is None:
                return await work
            task = asyncio.ensure_future(work)
            self._changes.add(task)
            task.add_done_callback(self._settled)
            try:
                return await asyncio.shield(task)
            except asyncio.CancelledError:
                if not task.done():
                    self._orphans.add(task)  # _settled says how it ended
                elif not task.cancelled():
                    task.exception()  # ended as the caller left: nobody else retrieves it
                raise
        except KeyAdminError as exc:
            await context.abort(_CODES[exc.code], exc.message)
        except (RedisError, OSError) as exc:
            self._store_failed(runtime, exc)
            await context.abort(grpc.StatusCode.UNAVAILABLE, "key store unavailable")
        raise AssertionError("abort raises")  # pragma: no cover

    def _store_failed(self, runtime: Runtime, exc: BaseException) -> None:
        # The client is told no more; the log says why (WRONGPASS after a password rotation,
        # NOPERM, READONLY, a TLS certificate refused), never a key or secret.
        if self._store_failures_said.ready():
            secrets = runtime.api_keys.store_secrets if runtime.api_keys else ()
            log.warning("API-key store unavailable (admin API calls fail with UNAVAILABLE): "
                        "%s", store_errors.describe(exc, secrets))

    async def CreateKey(self, request: pb.CreateKeyRequest,
                        context: grpc.aio.ServicerContext[Any, Any]) -> pb.CreateKeyResponse:
        new = await self._run(context, lambda m: m.create(
            request.tenant, request.name, list(request.scopes), request.ttl_seconds),
            lambda new: ("apikey_created", new.record))
        return pb.CreateKeyResponse(key=to_message(new.record), api_key=new.api_key)

    async def ListKeys(self, request: pb.ListKeysRequest,
                       context: grpc.aio.ServicerContext[Any, Any]) -> pb.ListKeysResponse:
        async def page(manager: KeyManager) -> pb.ListKeysResponse:
            if request.page_size < 0:
                raise KeyAdminError("invalid_argument", "page_size: must not be negative")
            records = await manager.list(request.tenant, request.include_revoked,
                                         request.page_token)
            return list_page(records, min(request.page_size or PAGE_SIZE, MAX_PAGE_SIZE))
        return await self._run(context, page)

    async def RotateKey(self, request: pb.RotateKeyRequest,
                        context: grpc.aio.ServicerContext[Any, Any]) -> pb.RotateKeyResponse:
        new, old = await self._run(
            context, lambda m: m.rotate(request.key_id, request.overlap_seconds),
            lambda pair: ("apikey_rotated", pair[0].record))
        return pb.RotateKeyResponse(new_key=to_message(new.record), api_key=new.api_key,
                                    old_key=to_message(old))

    async def RevokeKey(self, request: pb.RevokeKeyRequest,
                        context: grpc.aio.ServicerContext[Any, Any]) -> pb.RevokeKeyResponse:
        record = await self._run(context, lambda m: m.revoke(request.key_id),
                                 lambda record: ("apikey_revoked", record))
        return pb.RevokeKeyResponse(key=to_message(record))

    async def GetUsage(self, request: pb.GetUsageRequest,
                       context: grpc.aio.ServicerContext[Any, Any]) -> pb.GetUsageResponse:
        usage = await self._run(context, lambda m: m.usage(request.tenant))
        return pb.GetUsageResponse(
            tenant=usage.tenant, requests=usage.requests,
            revoked_attempts=usage.revoked_attempts,
            keys=[pb.KeyUsage(key_id=k, requests=v) for k, v in sorted(usage.per_key.items())])


async def _work(runtime: Runtime, action: Callable[[KeyManager], Awaitable[T]],
                changed: Callable[[T], tuple[str, KeyRecord]] | None, peer: str) -> T:
    try:
        if runtime.api_keys is None:
            raise KeyAdminError("failed_precondition", "api_keys is not configured")
        tenants = runtime.tenants
        manager = KeyManager(runtime.api_keys, tenants.valid_id,
                             lambda t: tenants.resolve(t) is not Reason.TENANT_UNKNOWN)
        result = await action(manager)
        if changed is not None:
            _audit_change(runtime, peer, *changed(result))
        return result
    finally:
        runtime.unpin()


def _audit_change(runtime: Runtime, peer: str, event: str, record: KeyRecord) -> None:
    # Uncapped: only a caller holding the admin credential gets here. Never the secret; the
    # peer is the admin client's address (`unix:` for the socket).
    runtime.audit.write_event({
        "ts": round(time.time(), 3), "event": event, "key_id": record.key_id,
        "tenant": record.tenant, "replaces": record.replaces or None,
        "expires_at": record.expires_at or None, "peer": peer})
