"""Decisions on the wire: the status table, uniform denials, RFC 6750 challenges, and the
hand-encoded allow path byte-for-byte equal to the protobuf-built response."""

from __future__ import annotations

import json
import random

import pytest
from envoy.service.auth.v3.external_auth_pb2 import CheckResponse
from tenantgate import wire
from tenantgate.decision import (
    STATUS,
    Allow,
    Deny,
    Reason,
    encode_fixed,
    encode_metadata,
    encode_response,
    to_check_response,
)

EXPECTED_STATUS = {
    Reason.MALFORMED_REQUEST: 400, Reason.DUPLICATE_HEADER: 400, Reason.OVERSIZED_HEADER: 400,
    Reason.MULTIPLE_CREDENTIALS: 400,
    Reason.TENANT_UNKNOWN: 403, Reason.TENANT_SUSPENDED: 403, Reason.ROUTE_DENIED: 403,
    Reason.SCOPE_MISSING: 403, Reason.ROLE_MISSING: 403,
    Reason.CROSS_TENANT_PATH: 404, Reason.BODY_TOO_LARGE: 413, Reason.LENGTH_REQUIRED: 411,
    Reason.CONTENT_TYPE_NOT_ALLOWED: 415, Reason.QUOTA_EXCEEDED: 429,
    Reason.QUOTA_UNAVAILABLE: 503, Reason.KEYSET_UNAVAILABLE: 503,
    Reason.API_KEY_STORE_UNAVAILABLE: 503, Reason.DEPENDENCY_UNAVAILABLE: 503,
}
CREDENTIAL_FAILURES = [Reason.NO_CREDENTIAL, Reason.MALFORMED_TOKEN, Reason.TOKEN_TOO_LARGE,
                       Reason.ALGORITHM_NOT_ALLOWED, Reason.UNKNOWN_ISSUER, Reason.UNKNOWN_KEY,
                       Reason.BAD_SIGNATURE, Reason.TOKEN_EXPIRED, Reason.WRONG_AUDIENCE,
                       Reason.TENANT_INVALID, Reason.ISSUER_NOT_ALLOWED_FOR_TENANT]


def test_every_reason_but_ok_has_a_status() -> None:
    assert set(STATUS) == set(Reason) - {Reason.OK}


@pytest.mark.parametrize("reason, status", EXPECTED_STATUS.items(), ids=str)
def test_status_table(reason: Reason, status: int) -> None:
    assert Deny(reason).status == status


@pytest.mark.parametrize("reason", CREDENTIAL_FAILURES, ids=str)
def test_credential_and_tenant_claim_failures_are_401(reason: Reason) -> None:
    # A wrong tenant claim must look like any bad token, never like "tenant exists".
    assert Deny(reason).status == 401


def _denied(reason: Reason, request_id: str = "rid") -> tuple[int, dict[str, str], str]:
    response = CheckResponse.FromString(encode_response(Deny(reason), request_id))
    assert response.status.code == 7  # PERMISSION_DENIED: a denial, not a gRPC failure
    denied = response.denied_response
    headers = {h.header.key: h.header.value for h in denied.headers}
    assert len(headers) == len(denied.headers), "a header sent twice"
    return denied.status.code, headers, denied.body


def _reasons_of(status: int) -> list[Reason]:
    return [r for r, s in STATUS.items() if s == status and r != Reason.NO_CREDENTIAL]


# Only statuses that several reasons share can leak which one it was.
SHARED_STATUSES = [s for s in sorted(set(STATUS.values())) if len(_reasons_of(s)) >= 2]


def test_several_statuses_are_shared_by_reasons() -> None:
    assert {400, 401, 403, 503} <= set(SHARED_STATUSES)


@pytest.mark.parametrize("status", SHARED_STATUSES)
def test_denials_of_one_status_are_byte_identical_whatever_the_reason(status: int) -> None:
    encoded = {encode_response(Deny(r), "rid") for r in _reasons_of(status)}
    assert len(encoded) == 1, f"status {status} leaks its reason"


@pytest.mark.parametrize("reason", sorted(STATUS, key=str), ids=str)
def test_deny_body_is_small_json_with_only_error_and_request_id(reason: Reason) -> None:
    status, headers, body = _denied(reason, "req-42")
    assert status == STATUS[reason]
    assert headers["content-type"] == "application/json"
    document = json.loads(body)
    assert set(document) == {"error", "request_id"} and document["request_id"] == "req-42"
    assert str(reason) not in body and len(body) < 100


@pytest.mark.parametrize("reason, challenge", [
    (Reason.NO_CREDENTIAL, "Bearer"),
    (Reason.BAD_SIGNATURE, 'Bearer error="invalid_token"'),
    (Reason.TOKEN_EXPIRED, 'Bearer error="invalid_token"'),
    (Reason.DUPLICATE_HEADER, 'Bearer error="invalid_request"'),
    (Reason.SCOPE_MISSING, 'Bearer error="insufficient_scope"'),
    (Reason.CROSS_TENANT_PATH, None),
    (Reason.QUOTA_EXCEEDED, None),
    (Reason.KEYSET_UNAVAILABLE, None),
], ids=str)
def test_www_authenticate_follows_rfc_6750(reason: Reason, challenge: str | None) -> None:
    # RFC 6750 3.1: no error code without a credential; never an error_description (detail).
    _, headers, _ = _denied(reason)
    assert headers.get("www-authenticate") == challenge
    assert "error_description" not in json.dumps(headers)


def test_deny_extra_headers_are_sent() -> None:
    response = CheckResponse.FromString(encode_response(
        Deny(Reason.QUOTA_EXCEEDED, (("retry-after", "3"),)), "rid"))
    headers = {h.header.key: h.header.value for h in response.denied_response.headers}
    assert headers["retry-after"] == "3"


def _allow(**overrides: object) -> Allow:
    fields: dict[str, object] = dict(
        headers_to_set=[("x-tenant-id", "acme"), ("x-tenant-context", "a.b.c"),
                        ("x-tenant-subject", "user-1")],
        headers_to_remove=("x-tenant-plan", "x-tenant-roles"),
        response_headers=[("x-ratelimit-remaining", "9")],
        metadata={"tenant": "acme", "plan": "gold", "subject": "user-1"})
    fields.update(overrides)
    return Allow(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("allow", [
    _allow(),
    _allow(metadata={}),
    _allow(response_headers=[], headers_to_remove=()),
    _allow(headers_to_set=[("x-tenant-id", "t" * 300), ("x-tenant-context", "c" * 20000)]),
    _allow(headers_to_set=[("x-tenant-id", "acme")], fresh_headers=[("x-tenant-context", "a.b.c")]),
], ids=["full", "no-metadata", "no-removals", "long-values", "fresh-context"])
def test_hand_encoded_allow_parses_to_the_protobuf_built_response(allow: Allow) -> None:
    fast = CheckResponse.FromString(encode_response(allow, "rid"))
    assert fast == to_check_response(allow, "rid")


_PIECES = ["", "a", "é", "\u212a", "\U0001f600", "\x00", "\r\n", ",", "\ufeff", "x" * 127,
           "y" * 128, "z" * 16_384]


def test_hand_encoded_allow_equals_protobuf_for_random_values() -> None:
    # Empty, non-ASCII, NUL and long values (lengths across varint byte boundaries), with and
    # without the per-caller template pipeline.allow pre-encodes.
    rng = random.Random(20)

    def text() -> str:
        return "".join(rng.choice(_PIECES) for _ in range(rng.randint(0, 3)))

    for _ in range(300):
        headers = [(text(), text()) for _ in range(rng.randint(0, 3))]
        removals = tuple(text() for _ in range(rng.randint(0, 2)))
        metadata = {text(): text() for _ in range(rng.randint(0, 4))}
        pre = rng.random() < 0.5
        allow = Allow(headers, [(text(), text())], removals, [(text(), text())], metadata,
                      encode_fixed(headers, removals) if pre else b"",
                      encode_metadata(metadata) if pre else b"")
        assert CheckResponse.FromString(encode_response(allow, "rid")) == to_check_response(
            allow, "rid")


@pytest.mark.parametrize("value_length", [0, 127, 128, 15_990, 15_996, 15_997, 16_383, 16_384,
                                          70_000])
def test_header_option_is_the_nested_fields_at_every_length(value_length: int) -> None:
    # The short-header path writes the nesting out; around its size limit and past it, the
    # bytes are still field(2, field(1, field(1, name) + field(2, value)) + append_action).
    name, value = "x-tenant-context", "v" * value_length
    nested = wire.field(1, wire.field(1, name.encode()) + wire.field(2, value.encode()))
    assert wire.header_option(name, value) == wire.field(2, nested + b"\x18\x02")


def test_allow_overwrites_every_header_it_sets() -> None:
    response = CheckResponse.FromString(encode_response(_allow(), "rid"))
    ok = response.ok_response
    assert response.status.code == 0
    assert [h.append_action for h in ok.headers] == [2, 2, 2]  # OVERWRITE_IF_EXISTS_OR_ADD
    assert [h.append_action for h in ok.response_headers_to_add] == [2]


def test_no_header_is_both_set_and_removed() -> None:
    # Envoy 1.40 applies headers_to_remove after the OK headers: it would delete our value.
    ok = CheckResponse.FromString(encode_response(_allow(), "rid")).ok_response
    assert not {h.header.key for h in ok.headers} & set(ok.headers_to_remove)
