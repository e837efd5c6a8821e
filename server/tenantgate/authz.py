"""The Check servicer: one runtime snapshot, RequestView in, pipeline, one response out."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import replace

import grpc
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest

from tenantgate.decision import Decision, Deny, Reason, encode_response
from tenantgate.errors import (
    ApiKeyStoreUnavailable,
    DependencyError,
    KeySetUnavailable,
    QuotaStoreUnavailable,
)
from tenantgate.observe import metrics
from tenantgate.observe.audit import AuditRecord
from tenantgate.pipeline import CheckState, decide
from tenantgate.request import RequestView
from tenantgate.runtime import Runtime

log = logging.getLogger("tenantgate.authz")
# A dependency that failed becomes a decision chosen on purpose: 503, fail closed. (The
# quota stage applies its own configured failure mode before anything reaches here.)
_DEPENDENCY_DENIALS: dict[type[DependencyError], Reason] = {
    KeySetUnavailable: Reason.KEYSET_UNAVAILABLE,
    QuotaStoreUnavailable: Reason.QUOTA_UNAVAILABLE,
    ApiKeyStoreUnavailable: Reason.API_KEY_STORE_UNAVAILABLE,
}


SERVICE = "envoy.service.auth.v3.Authorization"
MAX_REQUEST_ID_CHARS = 128


class AuthorizationServicer:
    """Answers Check with serialized CheckResponse bytes (allows are encoded by wire.py)."""

    def __init__(self, get_runtime: Callable[[], Runtime]) -> None:
        self._get_runtime = get_runtime

    def add_to_server(self, server: grpc.aio.Server) -> None:
        handler = grpc.unary_unary_rpc_method_handler(
            self.check_parsed, request_deserializer=parse_check_request,
            response_serializer=None)  # check_parsed returns bytes already
        handlers = {"Check": handler}
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        # Registered as well, like generated code does: gRPC then matches the method when the
        # call arrives instead of asking every generic handler, which is cheaper per Check.
        server.add_registered_method_handlers(SERVICE, handlers)

    async def Check(self, request: CheckRequest, context: grpc.aio.ServicerContext
                    ) -> bytes:
        """Check for a message parsed elsewhere (tests, tools); gRPC calls check_parsed."""
        return await self.check_parsed((request, request.ByteSize()), context)

    async def check_parsed(self, parsed: tuple[CheckRequest, int],
                           context: grpc.aio.ServicerContext) -> bytes:
        request, size = parsed
        started = time.perf_counter()
        # One snapshot for the whole Check, pinned: a reload closes it only after the last
        # call holding it has finished.
        runtime = self._get_runtime().pin()
        try:
            view = RequestView.from_check(request, size)
            if not view.request_id or len(view.request_id) > MAX_REQUEST_ID_CHARS:
                # Envoy's are UUIDs; a client-supplied one goes into the signed context and
                # the denial body, so an absurd one is replaced rather than carried.
                view = replace(view, request_id=uuid.uuid4().hex)
            state = CheckState(runtime, view)
            try:
                decision = await decide(state)
            except DependencyError as exc:
                decision = Deny(_DEPENDENCY_DENIALS.get(type(exc),
                                                        Reason.DEPENDENCY_UNAVAILABLE))
            except Exception:
                metrics.INTERNAL_ERRORS.inc()
                log.exception("internal error in Check")
                await context.abort(grpc.StatusCode.INTERNAL, "internal error")
                raise  # abort raises; this line only satisfies type checkers
            _observe(state, decision, time.perf_counter() - started)
            return encode_response(decision, view.request_id)
        finally:
            runtime.unpin()


def parse_check_request(data: bytes) -> tuple[CheckRequest, int]:
    """The message and its serialized length, which bounds every header value's length: known
    here for free, where RequestView would otherwise walk the whole message to compute it."""
    return CheckRequest.FromString(data), len(data)


def _observe(s: CheckState, decision: Decision, elapsed: float) -> None:
    allowed = not isinstance(decision, Deny)
    tenant_id = s.tenant.id if s.tenant else _claimed_tenant(s)
    label = s.tenant.label if s.tenant else s.runtime.tenants.label(tenant_id)
    metrics.CHECKS.inc(("allow" if allowed else "deny", decision.reason, label))
    metrics.CHECK_SECONDS.observe(elapsed)
    audit = s.runtime.audit
    if audit.wants(allowed):
        identity = s.identity
        audit.write(AuditRecord(
            request_id=s.request.request_id, tenant=tenant_id,
            subject=identity.subject if identity else None,
            issuer=identity.issuer if identity else None,
            key_id=identity.key_id if identity else None,
            method=s.request.method, path=s.request.path,
            decision="allow" if allowed else "deny", reason=str(decision.reason),
            status=decision.status, latency_ms=round(elapsed * 1000, 3)))


def _claimed_tenant(s: CheckState) -> str | None:
    """The tenant a denied caller claimed, when it is a safe string, for the audit line."""
    claim = s.identity.tenant_claim if s.identity else None
    return claim if isinstance(claim, str) and s.runtime.tenants.valid_id(claim) else None
