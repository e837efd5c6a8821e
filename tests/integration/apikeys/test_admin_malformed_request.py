"""A request to the admin API that protobuf cannot parse (real admin listener): answered
INVALID_ARGUMENT with a fixed message, after the credential check; never UNKNOWN carrying the
parser's exception text, with a server traceback per call."""

from __future__ import annotations

import grpc
import pytest
from apikey_support import StartReplica, bearer

# ListKeysRequest.tenant (field 1, a proto3 string) holding a byte that is not UTF-8; and bytes
# that are no message at all (a tag of field 0, then a truncated varint).
_NOT_UTF8 = b"\x0a\x01\xff"
_CORRUPT = b"\x00\xff\xff"
_METHODS = ["CreateKey", "ListKeys", "RotateKey", "RevokeKey", "GetUsage"]


def _raw_call(channel: grpc.aio.Channel, method: str) -> grpc.aio.UnaryUnaryMultiCallable:
    # No serializers: the request goes out as the given bytes, the answer comes back as bytes.
    return channel.unary_unary(f"/tenantgate.admin.v1.ApiKeyAdmin/{method}")


@pytest.mark.parametrize("method", _METHODS)
@pytest.mark.parametrize("body", [_NOT_UTF8, _CORRUPT], ids=["string-not-utf8", "corrupt"])
async def test_a_request_that_cannot_be_parsed_is_invalid_argument_without_a_traceback(
        start_replica: StartReplica, caplog: pytest.LogCaptureFixture, method: str,
        body: bytes) -> None:
    a = await start_replica("a", admin=True)
    channel, _ = a.admin()
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _raw_call(channel, method)(body, metadata=bearer(), timeout=5)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details() == "the request is not a valid protobuf message"
    assert [r for r in caplog.records if r.exc_info] == []


async def test_without_the_credential_a_malformed_request_is_unauthenticated(
        start_replica: StartReplica) -> None:
    # The credential is checked first: a caller without it learns nothing about parsing.
    a = await start_replica("a", admin=True)
    channel, _ = a.admin()
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _raw_call(channel, "ListKeys")(_CORRUPT, metadata=bearer("wrong"), timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
