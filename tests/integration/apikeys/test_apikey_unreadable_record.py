"""A key record a hand edit left with bytes that are not UTF-8 (real redis-server): refused
exactly as an unknown key is, said once in the log, never gRPC INTERNAL with a traceback."""

from __future__ import annotations

import logging

import grpc
import pytest
import redis
from apikey_support import StartReplica, bearer
from google.rpc import code_pb2
from prometheus_client import REGISTRY
from tenantgate._gen.tenantgate.admin.v1 import apikeys_pb2 as pb
from tenantgate.identity.apikeys import format_key


def internal_errors() -> float:
    return REGISTRY.get_sample_value("tenantgate_internal_errors_total") or 0.0


@pytest.mark.parametrize("field, value", [(b"name", b"caf\xe9"), (b"n\xffme", b"x"),
                                          (b"revoked_at", b"\xff")],
                         ids=["value", "field-name", "revoked-at"])
async def test_a_record_that_is_not_utf8_is_refused_like_an_unknown_key(
        start_replica: StartReplica, redis_url: str, caplog: pytest.LogCaptureFixture,
        field: bytes, value: bytes) -> None:
    a = await start_replica("a", admin=True)
    channel, admin = a.admin()
    async with channel:
        broken = await admin.CreateKey(pb.CreateKeyRequest(tenant="acme"), metadata=bearer())
        intact = await admin.CreateKey(pb.CreateKeyRequest(tenant="acme"), metadata=bearer())
        with redis.Redis.from_url(redis_url) as client:
            client.hset(f"tenantgate:apikey:{broken.key.key_id}", field, value)
        a.app.runtime.api_keys.invalidate()
        secret = broken.api_key.split("_", 2)[2]
        unknown = format_key("tgk", "0123456789abcdef", secret)
        errors = internal_errors()

        refused = [await a.check(broken.api_key, request_id="same-id") for _ in range(3)]
        like_unknown = await a.check(unknown, request_id="same-id")
        assert like_unknown.denied_response.status.code == 401
        for response in refused:
            assert response.SerializeToString(deterministic=True) == \
                like_unknown.SerializeToString(deterministic=True)
        assert internal_errors() == errors
        said = [r for r in caplog.records if "is not UTF-8" in r.getMessage()]
        assert len(said) == 1 and said[0].levelno == logging.WARNING
        assert broken.key.key_id in said[0].getMessage() and said[0].exc_info is None

        # The tenant's other keys still work and still list; the broken one is left out.
        assert (await a.check(intact.api_key)).status.code == code_pb2.OK
        listed = await admin.ListKeys(pb.ListKeysRequest(tenant="acme", include_revoked=True),
                                      metadata=bearer())
        assert [k.key_id for k in listed.keys] == [intact.key.key_id]

        # Rotating it is refused, saying why (not INTERNAL); revoking it works, so that
        # rewriting the broken field later does not bring a leaked key back.
        with pytest.raises(grpc.aio.AioRpcError) as refusal:
            await admin.RotateKey(pb.RotateKeyRequest(key_id=broken.key.key_id),
                                  metadata=bearer())
        assert refusal.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "not UTF-8" in (refusal.value.details() or "")
        revoked = await admin.RevokeKey(pb.RevokeKeyRequest(key_id=broken.key.key_id),
                                        metadata=bearer())
        assert revoked.key.revoked_at > 0
        assert internal_errors() == errors
        with redis.Redis.from_url(redis_url) as client:
            stored = client.hget(f"tenantgate:apikey:{broken.key.key_id}", "revoked_at")
            assert stored is not None and int(stored) > 0  # written afresh, not read as revoked
            if field != b"revoked_at":  # mended: the key stays revoked
                client.hset(f"tenantgate:apikey:{broken.key.key_id}", field, b"mended")
        a.app.runtime.api_keys.invalidate()
        assert (await a.check(broken.api_key)).denied_response.status.code == 401


async def test_a_tenant_set_member_or_usage_field_not_utf8_is_left_out_and_said_once(
        start_replica: StartReplica, redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    # Hand edits of the tenant's key-id set and usage hash: ListKeys and GetUsage ended in
    # UNKNOWN with a traceback. Unreadable entries are left out, as unreadable records are.
    a = await start_replica("a", admin=True)
    channel, admin = a.admin()
    async with channel:
        intact = await admin.CreateKey(pb.CreateKeyRequest(tenant="acme"), metadata=bearer())
        assert (await a.check(intact.api_key)).status.code == code_pb2.OK
        await a.app.runtime.api_keys.flush_usage()
        with redis.Redis.from_url(redis_url) as client:
            client.sadd("tenantgate:apikeys:tenant:acme", b"\xff\xfe")
            client.hset("tenantgate:apikeys:usage:acme", b"key:\xff", 7)
        errors = internal_errors()
        for _ in range(2):
            listed = await admin.ListKeys(pb.ListKeysRequest(tenant="acme", include_revoked=True),
                                          metadata=bearer())
            assert [k.key_id for k in listed.keys] == [intact.key.key_id]
            usage = await admin.GetUsage(pb.GetUsageRequest(tenant="acme"), metadata=bearer())
            assert [(k.key_id, k.requests) for k in usage.keys] == [(intact.key.key_id, 1)]
            assert usage.requests == 1
        assert internal_errors() == errors
    said = [r for r in caplog.records if "not UTF-8" in r.getMessage()]
    assert [(r.levelno, r.exc_info) for r in said] == [(logging.WARNING, None)]
    assert "acme" in said[0].getMessage()
    assert [r for r in caplog.records if r.exc_info] == []
