"""Create -> use -> rotate -> both work -> revoke old -> old denied on every replica, through
real Check calls against running servers backed by a real redis-server."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from apikey_support import StartReplica, bearer
from google.rpc import code_pb2
from redis.asyncio import Redis
from tenantgate._gen.tenantgate.admin.v1 import apikeys_pb2 as pb
from tenantgate.context import KeyRing


def allowed_tenant(response: object) -> str | None:
    """The x-tenant-id an allowed Check sets, or None when it was denied."""
    if response.status.code != code_pb2.OK:  # type: ignore[attr-defined]
        return None
    headers = {h.header.key: h.header.value
               for h in response.ok_response.headers}  # type: ignore[attr-defined]
    return headers["x-tenant-id"]


async def denied_within(replica: object, api_key: str, bound: float) -> bool:
    """Poll until the key is denied; False if it still works after `bound` seconds."""
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        if allowed_tenant(await replica.check(api_key)) is None:  # type: ignore[attr-defined]
            return True
        await asyncio.sleep(0.02)
    return False


async def test_create_use_rotate_revoke_reaches_every_replica(start_replica: StartReplica
                                                              ) -> None:
    # A long cache TTL: only the pub/sub push can make the revocation visible this soon.
    a = await start_replica("a", admin=True, cache_ttl="60s")
    b = await start_replica("b", cache_ttl="60s")
    channel, admin = a.admin()
    async with channel:
        created = await admin.CreateKey(pb.CreateKeyRequest(
            tenant="acme", name="sync", scopes=["things:read"]), metadata=bearer())
        old_key = created.api_key
        assert old_key.startswith(f"tgk_{created.key.key_id}_")

        for replica in (a, b):  # use: the tenant comes from the key's record
            response = await replica.check(old_key)
            assert allowed_tenant(response) == "acme"
        headers = {h.header.key: h.header.value for h in response.ok_response.headers}
        ring = KeyRing({"c1": (a.app.runtime.config.context.keys[0].secret.value)}, "c1")
        assert ring.verify(headers["x-tenant-context"]).tenant == "acme"
        assert headers["x-tenant-subject"] == f"apikey:{created.key.key_id}"

        rotated = await admin.RotateKey(pb.RotateKeyRequest(key_id=created.key.key_id,
                                                            overlap_seconds=3600),
                                        metadata=bearer())
        new_key = rotated.api_key
        assert rotated.new_key.replaces_key_id == created.key.key_id
        assert 0 < rotated.old_key.expires_at <= time.time() + 3600
        for replica in (a, b):  # the overlap: both keys work everywhere
            assert allowed_tenant(await replica.check(old_key)) == "acme"
            assert allowed_tenant(await replica.check(new_key)) == "acme"

        await admin.RevokeKey(pb.RevokeKeyRequest(key_id=created.key.key_id), metadata=bearer())
        assert await denied_within(a, old_key, bound=5.0)
        assert await denied_within(b, old_key, bound=5.0)
        for replica in (a, b):
            assert allowed_tenant(await replica.check(new_key)) == "acme"


async def test_a_garbled_revocation_message_does_not_stop_later_revocations(
        start_replica: StartReplica, redis_url: str) -> None:
    a = await start_replica("a", admin=True, cache_ttl="60s")
    b = await start_replica("b", cache_ttl="60s")  # only the push can revoke this soon
    channel, admin = a.admin()
    async with channel:
        created = await admin.CreateKey(pb.CreateKeyRequest(tenant="acme"), metadata=bearer())
        assert allowed_tenant(await b.check(created.api_key)) == "acme"  # cached on b
        publisher = Redis.from_url(redis_url)
        async with publisher:
            await publisher.publish("tenantgate:apikeys:revoked", b"\xff\xfe not utf-8")
        await admin.RevokeKey(pb.RevokeKeyRequest(key_id=created.key.key_id), metadata=bearer())
        assert await denied_within(b, created.api_key, bound=5.0)


async def test_revocation_reaches_a_replica_that_misses_the_push_within_cache_ttl(
        start_replica: StartReplica) -> None:
    a = await start_replica("a", admin=True)
    # b listens on another channel, so it never hears the push: only its cache TTL helps.
    b = await start_replica("b", cache_ttl="1s", channel="elsewhere")
    channel, admin = a.admin()
    async with channel:
        created = await admin.CreateKey(pb.CreateKeyRequest(tenant="acme"), metadata=bearer())
        assert allowed_tenant(await b.check(created.api_key)) == "acme"  # now cached on b
        await admin.RevokeKey(pb.RevokeKeyRequest(key_id=created.key.key_id), metadata=bearer())
        assert allowed_tenant(await b.check(created.api_key)) == "acme"  # still cached
        assert await denied_within(b, created.api_key, bound=1.0 + 1.0)


async def test_usage_counts_requests_per_key_and_tenant_and_revoked_attempts(
        start_replica: StartReplica) -> None:
    a = await start_replica("a", admin=True)
    b = await start_replica("b")
    channel, admin = a.admin()
    async with channel:
        one = await admin.CreateKey(pb.CreateKeyRequest(tenant="acme"), metadata=bearer())
        two = await admin.CreateKey(pb.CreateKeyRequest(tenant="acme"), metadata=bearer())
        for _ in range(3):
            await a.check(one.api_key)
        for _ in range(2):
            await b.check(two.api_key)
        await admin.RevokeKey(pb.RevokeKeyRequest(key_id=two.key.key_id), metadata=bearer())
        assert await denied_within(b, two.api_key, bound=5.0)
        await b.app.runtime.api_keys.flush_usage()  # b's counters reach Redis on its next tick
        usage = await admin.GetUsage(pb.GetUsageRequest(tenant="acme"), metadata=bearer())
        assert usage.requests == 5
        assert {k.key_id: k.requests for k in usage.keys} == {one.key.key_id: 3,
                                                             two.key.key_id: 2}
        assert usage.revoked_attempts >= 1
        listed = await admin.ListKeys(pb.ListKeysRequest(tenant="acme"), metadata=bearer())
        assert [k.key_id for k in listed.keys] == [one.key.key_id]
        assert listed.keys[0].last_used_at > 0
        everything = await admin.ListKeys(pb.ListKeysRequest(tenant="acme", include_revoked=True),
                                          metadata=bearer())
        assert {k.key_id for k in everything.keys} == {one.key.key_id, two.key.key_id}


async def test_admin_api_refuses_calls_without_the_admin_credential(
        start_replica: StartReplica) -> None:
    a = await start_replica("a", admin=True)
    channel, admin = a.admin()
    async with channel:
        for metadata in ([], bearer("wrong-" + "x" * 40), [("authorization", "Basic abc")],
                         [("authorization", "Bearer ")], bearer(bearer()[0][1][7:-1])):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await admin.CreateKey(pb.CreateKeyRequest(tenant="acme"), metadata=metadata)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        listed = await admin.ListKeys(pb.ListKeysRequest(tenant="acme"), metadata=bearer())
        assert list(listed.keys) == []  # nothing was created by the refused calls
    # The admin service is not reachable through the Check listener at all.
    async with grpc.aio.insecure_channel(a.grpc_address) as check_channel:
        from tenantgate._gen.tenantgate.admin.v1 import apikeys_pb2_grpc

        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await apikeys_pb2_grpc.ApiKeyAdminStub(check_channel).ListKeys(
                pb.ListKeysRequest(tenant="acme"), metadata=bearer())
        assert missing.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_admin_api_rejects_bad_arguments_precisely(start_replica: StartReplica) -> None:
    a = await start_replica("a", admin=True)
    channel, admin = a.admin()
    async with channel:
        cases = [(admin.CreateKey(pb.CreateKeyRequest(tenant="ACME\r\n"), metadata=bearer()),
                  grpc.StatusCode.INVALID_ARGUMENT, "tenant: not a valid tenant id"),
                 (admin.RevokeKey(pb.RevokeKeyRequest(key_id="0123456789abcdef"),
                                  metadata=bearer()), grpc.StatusCode.NOT_FOUND, "no such key"),
                 (admin.CreateKey(pb.CreateKeyRequest(tenant="acme", scopes=["a b"]),
                                  metadata=bearer()), grpc.StatusCode.INVALID_ARGUMENT,
                  "scopes: printable ASCII words without spaces, quotes or backslashes")]
        for call, code, details in cases:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call
            assert (refused.value.code(), refused.value.details()) == (code, details)
