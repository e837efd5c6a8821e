"""The gRPC server's largest request message: every Check an Envoy with its default header limit
can send fits, and a bigger message is refused by gRPC before any servicer parses it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from envoy.extensions.common.ratelimit.v3.ratelimit_pb2 import RateLimitDescriptor
from envoy.service.auth.v3.external_auth_pb2_grpc import AuthorizationStub
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from tcp_app import app_on_tcp
from tenantgate.app import MAX_RECEIVE_BYTES
from tenantgate.testing.check import check_request

ENVOY_HEADER_LIMIT = 60 * 1024  # Envoy's default max_request_headers_kb


@pytest.fixture
async def channel(tmp_path: Path) -> AsyncIterator[grpc.aio.Channel]:
    # The client must not refuse first: its own default send limit is unbounded, but say so.
    options = [("grpc.max_send_message_length", 8 * MAX_RECEIVE_BYTES)]
    async with app_on_tcp(tmp_path) as app, grpc.aio.insecure_channel(
            str(app.runtime.config.listen.grpc), options=options) as channel:
        yield channel


async def test_the_largest_check_envoy_sends_by_default_is_answered(
        channel: grpc.aio.Channel) -> None:
    # Envoy's whole header block at its default limit, nearly all of it the path, which the
    # Check carries twice (http.path and ":path" in the map, as Istio's ext_authz sends all
    # headers): the largest such Check.
    path = "/" + "p" * (ENVOY_HEADER_LIMIT - 1024)
    request = check_request(path, headers={":path": path, ":authority": "api.test",
                                           ":method": "GET", "x-request-id": "r" * 36})
    assert 2 * ENVOY_HEADER_LIMIT > request.ByteSize() > 1.9 * ENVOY_HEADER_LIMIT
    response = await AuthorizationStub(channel).Check(request, timeout=10)
    # Answered by Check (400: a header value over its 16 KiB), not refused by gRPC, which
    # Envoy would turn into a 503.
    assert response.denied_response.status.code == 400


async def test_a_message_over_the_limit_is_refused_before_a_servicer_reads_it(
        channel: grpc.aio.Channel) -> None:
    # A ShouldRateLimit call of 100k descriptors (2 MB) held the event loop for seconds; the
    # descriptor bounds refuse it too, but only after gRPC has parsed all of it.
    descriptors = [RateLimitDescriptor(entries=[RateLimitDescriptor.Entry(key="k", value="v")])
                   ] * (MAX_RECEIVE_BYTES // 10 + 1)
    request = rls_pb2.RateLimitRequest(domain="edge", descriptors=descriptors)
    assert request.ByteSize() > MAX_RECEIVE_BYTES
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await rls_pb2_grpc.RateLimitServiceStub(channel).ShouldRateLimit(request, timeout=10)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
