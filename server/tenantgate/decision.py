"""Allow / Deny values, the closed Reason vocabulary, the status table, and the one writer of
Envoy CheckResponse messages."""

from __future__ import annotations

import enum
import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from envoy.config.core.v3.base_pb2 import HeaderValue, HeaderValueOption
from envoy.service.auth.v3.external_auth_pb2 import (
    CheckResponse,
    DeniedHttpResponse,
    OkHttpResponse,
)
from envoy.type.v3.http_status_pb2 import HttpStatus
from google.protobuf.struct_pb2 import Struct
from google.rpc import code_pb2, status_pb2

from tenantgate import wire


class Reason(enum.StrEnum):
    """Why a Check ended as it did: metric label, audit field and status, never sent to clients."""

    OK = "ok"
    MALFORMED_REQUEST = "malformed_request"
    DUPLICATE_HEADER = "duplicate_header"
    OVERSIZED_HEADER = "oversized_header"
    UNDERSCORED_TRUSTED_HEADER = "underscored_trusted_header"
    NO_CREDENTIAL = "no_credential"
    MULTIPLE_CREDENTIALS = "multiple_credentials"
    MALFORMED_TOKEN = "malformed_token"
    TOKEN_TOO_LARGE = "token_too_large"
    ALGORITHM_NOT_ALLOWED = "algorithm_not_allowed"
    UNKNOWN_ISSUER = "unknown_issuer"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    TOKEN_EXPIRED = "token_expired"
    TOKEN_NOT_YET_VALID = "token_not_yet_valid"
    TOKEN_ISSUED_IN_FUTURE = "token_issued_in_future"
    TOKEN_TOO_OLD = "token_too_old"
    WRONG_AUDIENCE = "wrong_audience"
    WRONG_TOKEN_TYPE = "wrong_token_type"
    UNSUPPORTED_CRIT = "unsupported_crit"
    BAD_CLAIMS = "bad_claims"
    TENANT_MISSING = "tenant_missing"
    TENANT_INVALID = "tenant_invalid"
    ISSUER_NOT_ALLOWED_FOR_TENANT = "issuer_not_allowed_for_tenant"
    TENANT_UNKNOWN = "tenant_unknown"
    TENANT_SUSPENDED = "tenant_suspended"
    ROUTE_DENIED = "route_denied"
    SCOPE_MISSING = "scope_missing"
    ROLE_MISSING = "role_missing"
    BODY_TOO_LARGE = "body_too_large"
    LENGTH_REQUIRED = "length_required"
    CONTENT_TYPE_NOT_ALLOWED = "content_type_not_allowed"
    CROSS_TENANT_PATH = "cross_tenant_path"
    QUOTA_EXCEEDED = "quota_exceeded"
    QUOTA_UNAVAILABLE = "quota_unavailable"
    KEYSET_UNAVAILABLE = "keyset_unavailable"
    API_KEY_STORE_UNAVAILABLE = "api_key_store_unavailable"
    DEPENDENCY_UNAVAILABLE = "dependency_unavailable"
    API_KEY_INVALID = "api_key_invalid"
    API_KEY_REVOKED = "api_key_revoked"
    API_KEY_EXPIRED = "api_key_expired"


_BAD_REQUEST = {Reason.MALFORMED_REQUEST, Reason.DUPLICATE_HEADER, Reason.OVERSIZED_HEADER,
                Reason.UNDERSCORED_TRUSTED_HEADER, Reason.MULTIPLE_CREDENTIALS}
_FORBIDDEN = {Reason.TENANT_UNKNOWN, Reason.TENANT_SUSPENDED, Reason.ROUTE_DENIED,
              Reason.SCOPE_MISSING, Reason.ROLE_MISSING}
_STATUS_BY_REASON: dict[Reason, int] = {
    **{r: 400 for r in _BAD_REQUEST},
    **{r: 403 for r in _FORBIDDEN},
    Reason.BODY_TOO_LARGE: 413,
    Reason.LENGTH_REQUIRED: 411,
    Reason.CONTENT_TYPE_NOT_ALLOWED: 415,
    Reason.CROSS_TENANT_PATH: 404,  # never 403: another tenant's path must not look real
    Reason.QUOTA_EXCEEDED: 429,
    Reason.QUOTA_UNAVAILABLE: 503,
    Reason.KEYSET_UNAVAILABLE: 503,
    Reason.API_KEY_STORE_UNAVAILABLE: 503,
    Reason.DEPENDENCY_UNAVAILABLE: 503,
}
# Everything else is a credential failure: 401. The table is complete by construction.
STATUS: dict[Reason, int] = {r: _STATUS_BY_REASON.get(r, 401) for r in Reason if r != Reason.OK}

_ERROR_WORD = {400: "invalid_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               411: "missing_content_length", 413: "payload_too_large",
               415: "unsupported_media_type", 429: "too_many_requests", 503: "unavailable"}

Header = tuple[str, str]
TemplateKey = tuple[str, str | None, str, str]  # tenant, plan, issuer, subject


@dataclass(frozen=True, slots=True)
class Deny:
    reason: Reason
    headers: tuple[Header, ...] = ()

    @property
    def status(self) -> int:
        return STATUS[self.reason]


@dataclass(slots=True)
class Allow:
    headers_to_set: Sequence[Header] = ()  # repeat from request to request
    fresh_headers: Sequence[Header] = ()  # new every time: the context
    headers_to_remove: tuple[str, ...] = ()
    response_headers: Sequence[Header] = ()
    metadata: dict[str, str] = field(default_factory=dict)
    # headers_to_set + headers_to_remove and the metadata, already wire-encoded, when the
    # caller keeps them per tenant and caller (pipeline.allow); empty means "encode here".
    encoded_fixed: bytes = b""
    encoded_metadata: bytes = b""

    reason = Reason.OK
    status = 200


Decision = Allow | Deny


def _www_authenticate(deny: Deny) -> tuple[Header, ...]:
    # RFC 6750 section 3: a bare challenge when no credential came, an error code otherwise.
    if deny.status == 401:
        value = "Bearer" if deny.reason == Reason.NO_CREDENTIAL else 'Bearer error="invalid_token"'
        return (("www-authenticate", value),)
    if deny.status == 400:
        return (("www-authenticate", 'Bearer error="invalid_request"'),)
    if deny.status == 403:
        # Every 403 carries the same challenge: which check refused stays in the audit log.
        return (("www-authenticate", 'Bearer error="insufficient_scope"'),)
    return ()


def _header(name: str, value: str, overwrite: bool = True) -> HeaderValueOption:
    action = (HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD if overwrite
              else HeaderValueOption.APPEND_IF_EXISTS_OR_ADD)
    return HeaderValueOption(header=HeaderValue(key=name, value=value), append_action=action)


def deny_body(status: int, request_id: str) -> str:
    return json.dumps({"error": _ERROR_WORD.get(status, "denied"), "request_id": request_id},
                      separators=(",", ":"))


def to_check_response(decision: Decision, request_id: str) -> CheckResponse:
    if isinstance(decision, Deny):
        headers = [_header(k, v) for k, v in (*_www_authenticate(decision), *decision.headers,
                                              ("content-type", "application/json"))]
        return CheckResponse(
            status=status_pb2.Status(code=code_pb2.PERMISSION_DENIED),
            denied_response=DeniedHttpResponse(
                status=HttpStatus(code=decision.status),
                headers=headers, body=deny_body(decision.status, request_id)))
    ok = OkHttpResponse(
        headers=[_header(k, v) for k, v in (*decision.headers_to_set,
                                             *decision.fresh_headers)],
        headers_to_remove=decision.headers_to_remove,
        response_headers_to_add=[_header(k, v) for k, v in decision.response_headers])
    response = CheckResponse(status=status_pb2.Status(code=code_pb2.OK), ok_response=ok)
    if decision.metadata:
        metadata = Struct()
        metadata.update(decision.metadata)
        response.dynamic_metadata.CopyFrom(metadata)
    return response


def encode_fixed(headers_to_set: Sequence[Header], headers_to_remove: tuple[str, ...]) -> bytes:
    """The part of an allow that repeats for one tenant and caller, wire-encoded."""
    return b"".join([*(wire.header_option(k, v) for k, v in headers_to_set),
                     _encoded_removals(headers_to_remove)])


# The trusted headers to strip are the same for every Check of one config: encode them once.
_encoded_removals = functools.lru_cache(maxsize=16)(wire.headers_to_remove)


def encode_metadata(metadata: dict[str, str]) -> bytes:
    return b"".join([_struct_entry(k, v) for k, v in metadata.items()])


# Tenant, plan and issuer entries repeat across callers; only the subject is new per caller.
_struct_entry = functools.lru_cache(maxsize=4096)(wire.struct_entry)


def encode_response(decision: Decision, request_id: str) -> bytes:
    """The serialized CheckResponse; allows take the hand-encoded fast path (see wire.py)."""
    if isinstance(decision, Deny):
        return to_check_response(decision, request_id).SerializeToString()
    fixed = decision.encoded_fixed or encode_fixed(decision.headers_to_set,
                                                   decision.headers_to_remove)
    metadata = decision.encoded_metadata or encode_metadata(decision.metadata)
    # Field order inside OkHttpResponse: the repeating headers, then the fresh ones (the
    # signed context), so `headers` keeps the order of headers_to_set + fresh_headers.
    fresh = decision.fresh_headers
    if len(fresh) == 1:  # the signed context, on every allow: no list to build and join
        options = fixed + wire.header_option(*fresh[0])
    else:
        options = fixed + b"".join([wire.header_option(k, v) for k, v in fresh])
    if decision.response_headers:
        options += b"".join([wire.header_option(k, v, 6) for k, v in decision.response_headers])
    return wire.allow_response(options, metadata)
