"""Request messages protobuf cannot parse, sent as raw bytes over a real gRPC channel to the
in-process App: a deliberate answer with no exception text, counted, audited, logged once."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest
from envoy.extensions.common.ratelimit.v3.ratelimit_pb2 import RateLimitDescriptor
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse
from envoy.service.ratelimit.v3 import rls_pb2
from google.protobuf.message import DecodeError
from tcp_app import app_on_tcp
from tenantgate.observe import metrics
from tenantgate.observe import quota as quota_metrics
from tenantgate.testing.check import check_request

CHECK = "/envoy.service.auth.v3.Authorization/Check"
SHOULD_RATE_LIMIT = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"
MARK = "PLACEHOLDERX"  # replaced in the serialized message by bytes that are not UTF-8


def _spliced(message: bytes, bad: bytes) -> bytes:
    assert message.count(MARK.encode()) == 1
    return message.replace(MARK.encode(), b"PLACEHOLDER" + bad)  # same length: still framed


def _check_bytes(path: str = "/notes", value: str = "fine") -> bytes:
    return check_request(path, headers={"x-client": value}).SerializeToString()


def _rls_bytes(*entries: tuple[str, str]) -> bytes:
    descriptor = RateLimitDescriptor(entries=[RateLimitDescriptor.Entry(key=k, value=v)
                                              for k, v in entries])
    return rls_pb2.RateLimitRequest(domain="edge", descriptors=[descriptor]).SerializeToString()


# Envoy's rate-limit descriptors carry a header's value (request_headers) and the path.
BAD_CHECKS = {
    "truncated": _check_bytes()[:-5],
    "invalid-utf8-in-header-value": _spliced(_check_bytes(value=MARK), b"\xff"),
    "invalid-utf8-in-path": _spliced(_check_bytes(path=f"/tenants/acme/{MARK}"), b"\xc0"),
}
BAD_RATE_LIMITS = {
    "truncated": _rls_bytes(("tenant", "acme"), ("client", "c1"))[:-3],
    "invalid-utf8-in-header-value": _spliced(_rls_bytes(("client", MARK)), b"\xff"),
    "invalid-utf8-in-path": _spliced(_rls_bytes(("path", f"/tenants/acme/{MARK}")), b"\xc0"),
}


@pytest.mark.parametrize("parse, payload", [
    *((CheckRequest.FromString, p) for p in BAD_CHECKS.values()),
    *((rls_pb2.RateLimitRequest.FromString, p) for p in BAD_RATE_LIMITS.values()),
], ids=[*(f"check-{n}" for n in BAD_CHECKS), *(f"rls-{n}" for n in BAD_RATE_LIMITS)])
def test_the_payloads_are_ones_protobuf_cannot_parse(parse: Callable[[bytes], object],
                                                     payload: bytes) -> None:
    with pytest.raises(DecodeError):
        parse(payload)


@pytest.fixture
async def app_dir(tmp_path: Path) -> AsyncIterator[tuple[grpc.aio.Channel, Path]]:
    async with app_on_tcp(tmp_path) as app, grpc.aio.insecure_channel(
            str(app.runtime.config.listen.grpc)) as channel:
        yield channel, tmp_path


async def _raw(channel: grpc.aio.Channel, method: str, payload: bytes) -> bytes:
    call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    response: bytes = await call(payload, timeout=10)
    return response


def _no_exception_text(text: str) -> None:
    for word in ("DecodeError", "Unexpected", "Error parsing", "protobuf.message"):
        assert word not in text


def _malformed_checks() -> int:
    return metrics.CHECKS.value(("deny", "malformed_request", "other"))


def _invalid_rate_limits() -> float:
    value: float = quota_metrics.RLS_REQUESTS.labels("other", "invalid")._value.get()
    return value


def _internal_errors() -> float:
    value: float = metrics.INTERNAL_ERRORS._value.get()
    return value


@pytest.mark.parametrize("payload", BAD_CHECKS.values(), ids=BAD_CHECKS.keys())
async def test_unparseable_check_is_denied_400_malformed_request_without_exception_text(
        app_dir: tuple[grpc.aio.Channel, Path], payload: bytes) -> None:
    # A CheckResponse denial, not a gRPC error: Envoy would answer a gRPC error with its own
    # failure_mode_allow / status_on_error (authz.py says why).
    channel, directory = app_dir
    before, internal = _malformed_checks(), _internal_errors()
    response = CheckResponse.FromString(await _raw(channel, CHECK, payload))
    assert response.denied_response.status.code == 400
    body = json.loads(response.denied_response.body)
    assert body["error"] == "invalid_request"
    _no_exception_text(response.denied_response.body)
    assert _malformed_checks() == before + 1
    assert _internal_errors() == internal
    [line] = [json.loads(x) for x in (directory / "audit.log").read_text().splitlines()]
    assert {k: line[k] for k in ("request_id", "decision", "reason", "status", "method",
                                 "path", "tenant", "subject")} == {
        "request_id": body["request_id"], "decision": "deny", "reason": "malformed_request",
        "status": 400, "method": "", "path": "", "tenant": None, "subject": None}


@pytest.mark.parametrize("payload", BAD_RATE_LIMITS.values(), ids=BAD_RATE_LIMITS.keys())
async def test_unparseable_should_rate_limit_is_over_limit_not_an_error(
        app_dir: tuple[grpc.aio.Channel, Path], payload: bytes) -> None:
    # An error would hand the request to Envoy's failure_mode_deny: let through when open.
    channel, _ = app_dir
    before, internal = _invalid_rate_limits(), _internal_errors()
    answer = rls_pb2.RateLimitResponse.FromString(await _raw(channel, SHOULD_RATE_LIMIT, payload))
    assert answer.overall_code == rls_pb2.RateLimitResponse.OVER_LIMIT
    assert _invalid_rate_limits() == before + 1
    assert _internal_errors() == internal


async def test_unparseable_messages_log_one_warning_each_and_no_traceback(
        app_dir: tuple[grpc.aio.Channel, Path], caplog: pytest.LogCaptureFixture) -> None:
    channel, _ = app_dir
    caplog.set_level(logging.WARNING)
    for _ in range(3):
        for payload in BAD_CHECKS.values():
            await _raw(channel, CHECK, payload)
        for payload in BAD_RATE_LIMITS.values():
            await _raw(channel, SHOULD_RATE_LIMIT, payload)
    assert [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info] == []
    said = [(r.name, r.getMessage()) for r in caplog.records]
    assert [name for name, _ in said] == ["tenantgate.authz", "tenantgate.quota"]
    for _, message in said:
        _no_exception_text(message)


async def test_the_server_keeps_answering_valid_requests_after_unparseable_ones(
        app_dir: tuple[grpc.aio.Channel, Path]) -> None:
    channel, _ = app_dir
    for payload in BAD_CHECKS.values():
        await _raw(channel, CHECK, payload)
    for payload in BAD_RATE_LIMITS.values():
        await _raw(channel, SHOULD_RATE_LIMIT, payload)
    # Parsed and run through the pipeline: no credential (this App has no issuer), not 400.
    check = CheckResponse.FromString(await _raw(channel, CHECK, _check_bytes()))
    assert check.denied_response.status.code == 401
    limit = rls_pb2.RateLimitResponse.FromString(
        await _raw(channel, SHOULD_RATE_LIMIT, _rls_bytes(("client", "c1"))))
    assert limit.overall_code == rls_pb2.RateLimitResponse.OK
