"""The admin API's bounds and edge cases: lifetimes that would not fit, an explicit "no overlap",
re-rotation during an overlap, tenants no key could ever act for, and records stored before
lifetimes were bounded."""

from __future__ import annotations

import time
from typing import Any

import grpc
import pytest
from apikey_support import StartReplica, bearer
from google.rpc import code_pb2
from redis.asyncio import Redis
from tenantgate._gen.tenantgate.admin.v1 import apikeys_pb2 as pb
from tenantgate.identity.apikey_manager import KeyAdminError, KeyManager, NewKey

INT64_MAX = 2**63 - 1
TEN_YEARS = 10 * 365 * 86400
DAY = 86400


async def refused(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await call  # type: ignore[misc]
    return exc.value.code(), exc.value.details() or ""


async def test_a_lifetime_or_overlap_that_would_not_fit_is_refused_before_any_write(
        start_replica: StartReplica) -> None:
    a = await start_replica("a", admin=True)
    channel, admin = a.admin()
    async with channel:
        for ttl in (INT64_MAX, TEN_YEARS + 1):
            assert await refused(admin.CreateKey(
                pb.CreateKeyRequest(tenant="acme", ttl_seconds=ttl), metadata=bearer())) == (
                grpc.StatusCode.INVALID_ARGUMENT, f"ttl_seconds: at most {TEN_YEARS} (10 years)")
        listed = await admin.ListKeys(pb.ListKeysRequest(tenant="acme"), metadata=bearer())
        assert list(listed.keys) == []  # nothing stored, and listing still works

        created = await admin.CreateKey(pb.CreateKeyRequest(tenant="acme", ttl_seconds=TEN_YEARS),
                                        metadata=bearer())
        assert created.key.expires_at - created.key.created_at == TEN_YEARS
        assert await refused(admin.RotateKey(
            pb.RotateKeyRequest(key_id=created.key.key_id, overlap_seconds=INT64_MAX),
            metadata=bearer())) == (grpc.StatusCode.INVALID_ARGUMENT,
                                    f"overlap_seconds: at most {TEN_YEARS} (10 years)")
        listed = await admin.ListKeys(pb.ListKeysRequest(tenant="acme"), metadata=bearer())
        assert [(k.key_id, k.expires_at) for k in listed.keys] == [
            (created.key.key_id, created.key.expires_at)]  # no successor, expiry untouched


async def test_overlap_minus_one_ends_the_old_key_now_and_zero_means_the_default(
        start_replica: StartReplica) -> None:
    a = await start_replica("a", admin=True)
    channel, admin = a.admin()
    async with channel:
        first = await admin.CreateKey(pb.CreateKeyRequest(tenant="acme"), metadata=bearer())
        second = await admin.CreateKey(pb.CreateKeyRequest(tenant="acme"), metadata=bearer())
        assert (await a.check(first.api_key)).status.code == code_pb2.OK

        now = int(time.time())
        at_once = await admin.RotateKey(pb.RotateKeyRequest(key_id=first.key.key_id,
                                                            overlap_seconds=-1),
                                        metadata=bearer())
        assert 0 < at_once.old_key.expires_at <= time.time()
        assert (await a.check(first.api_key)).status.code == code_pb2.PERMISSION_DENIED
        assert (await a.check(at_once.api_key)).status.code == code_pb2.OK

        default = await admin.RotateKey(pb.RotateKeyRequest(key_id=second.key.key_id,
                                                            overlap_seconds=0),
                                        metadata=bearer())
        assert default.old_key.expires_at >= now + DAY  # rotate_overlap: 24 h
        assert (await a.check(second.api_key)).status.code == code_pb2.OK

        assert await refused(admin.RotateKey(
            pb.RotateKeyRequest(key_id=at_once.new_key.key_id, overlap_seconds=-2),
            metadata=bearer())) == (grpc.StatusCode.INVALID_ARGUMENT, "overlap_seconds: must "
                                    "be -1 (none), 0 (the default) or positive")


async def test_a_configured_overlap_under_a_second_rounds_up_to_one(
        start_replica: StartReplica) -> None:
    """int() truncated a rotate_overlap of 500ms to 0: the old key ended at once."""
    a = await start_replica("a", admin=True, rotate_overlap="500ms")
    runtime = a.app.current()
    manager = KeyManager(runtime.api_keys, runtime.tenants.valid_id, lambda tenant: True)
    assert manager._overlap(0) == 1  # the default: exact, whenever the clock's second ticks
    old = await manager.create("acme", "billing", [], ttl_seconds=0)
    before = int(time.time())
    _, ended = await manager.rotate(old.record.key_id, overlap_seconds=0)
    assert before + 1 <= ended.expires_at <= int(time.time()) + 1


async def test_rotating_again_during_the_overlap_keeps_the_original_lifetime(
        start_replica: StartReplica) -> None:
    a = await start_replica("a", admin=True)
    channel, admin = a.admin()
    async with channel:
        for ttl in (90 * DAY, 0):  # 0: never expires, and neither may its successors
            old = await admin.CreateKey(pb.CreateKeyRequest(tenant="acme", ttl_seconds=ttl),
                                        metadata=bearer())
            for _ in range(2):  # the second rotation sees the overlap-shortened expiry
                rotated = await admin.RotateKey(pb.RotateKeyRequest(
                    key_id=old.key.key_id, overlap_seconds=60), metadata=bearer())
                new = rotated.new_key
                lifetime = new.expires_at - new.created_at if new.expires_at else 0
                assert lifetime == ttl


async def test_a_key_revoked_during_its_rotation_leaves_no_working_successor(
        start_replica: StartReplica) -> None:
    a = await start_replica("a", admin=True)
    runtime = a.app.current()
    manager = KeyManager(runtime.api_keys, runtime.tenants.valid_id, lambda tenant: True)
    old = await manager.create("acme", "billing", [], ttl_seconds=0)
    create = manager.create

    async def create_while_revoked(*args: Any, **kwargs: Any) -> NewKey:
        await manager.revoke(old.record.key_id)  # another admin call, between read and write
        return await create(*args, **kwargs)

    manager.create = create_while_revoked  # type: ignore[method-assign]
    with pytest.raises(KeyAdminError, match="revoked during the rotation"):
        await manager.rotate(old.record.key_id, overlap_seconds=60)
    successors = [r for r in await manager.list("acme", include_revoked=True)
                  if r.replaces == old.record.key_id]
    assert len(successors) == 1 and successors[0].revoked
    for key in await manager.list("acme", include_revoked=True):
        assert key.revoked  # neither the old key nor its successor works
    assert (await a.check(old.api_key)).status.code != code_pb2.OK


async def test_keys_only_for_tenants_that_could_use_them(start_replica: StartReplica) -> None:
    closed = await start_replica("closed", admin=True)  # registry set: unknown refused
    channel, admin = closed.admin()
    async with channel:
        assert await refused(admin.CreateKey(pb.CreateKeyRequest(tenant="initech"),
                                             metadata=bearer())) == (
            grpc.StatusCode.INVALID_ARGUMENT, "tenant: not in tenants.registry and "
            "tenants.allow_unknown is off: the key could never be used")
        listed = await admin.ListKeys(pb.ListKeysRequest(tenant="initech"), metadata=bearer())
        assert list(listed.keys) == []

    opened = await start_replica("open", admin=True, allow_unknown=True)
    channel, admin = opened.admin()
    async with channel:
        created = await admin.CreateKey(pb.CreateKeyRequest(tenant="initech"),
                                        metadata=bearer())
        assert (await opened.check(created.api_key)).status.code == code_pb2.OK


async def test_a_record_stored_with_an_out_of_range_expiry_does_not_break_listing(
        start_replica: StartReplica, redis_url: str) -> None:
    a = await start_replica("a", admin=True)
    channel, admin = a.admin()
    async with channel:
        created = await admin.CreateKey(pb.CreateKeyRequest(tenant="acme"), metadata=bearer())
        async with Redis.from_url(redis_url) as client:  # as the unbounded version stored it
            await client.hset(f"tenantgate:apikey:{created.key.key_id}", "expires_at",
                              str(2**64))
        listed = await admin.ListKeys(pb.ListKeysRequest(tenant="acme"), metadata=bearer())
        assert [k.expires_at for k in listed.keys] == [INT64_MAX]
