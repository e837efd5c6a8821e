"""ListKeys lists the keys that still work unless asked for all, and pages its answer: every key a
tenant ever had in one message (rotations leave expired keys behind) passed a client's default
4 MiB receive limit at about 500 keys, and then the tenant could not be listed at all."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest
from apikey_support import ADMIN_TOKEN, Replica, StartReplica, bearer
from tenantgate._gen.tenantgate.admin.v1 import apikeys_pb2 as pb
from tenantgate._gen.tenantgate.admin.v1 import apikeys_pb2_grpc
from tenantgate.admin import servicer
from tenantgate.cli import main
from tenantgate.identity.apikey_manager import KeyManager
from tenantgate.identity.apikey_store import KeyRecord

# The largest key the admin API creates: 64 scopes of 128 characters, about 8.6 KB listed.
LONG_SCOPES = [f"s{i:02d}:" + "x" * 124 for i in range(64)]


def listing_order(records: list[KeyRecord]) -> list[str]:
    """Key ids as ListKeys lists them: oldest first, by key id within a second."""
    return [r.key_id for r in sorted(records, key=lambda r: (r.created_at, r.key_id))]


def manager_of(replica: Replica) -> KeyManager:
    runtime = replica.app.current()
    return KeyManager(runtime.api_keys, runtime.tenants.valid_id, lambda tenant: True)


async def every_page(admin: apikeys_pb2_grpc.ApiKeyAdminStub, **request: object
                     ) -> list[pb.ListKeysResponse]:
    pages = [await admin.ListKeys(pb.ListKeysRequest(tenant="acme", **request),  # type: ignore[arg-type]
                                  metadata=bearer(), timeout=10)]
    while pages[-1].next_page_token:
        pages.append(await admin.ListKeys(pb.ListKeysRequest(
            tenant="acme", page_token=pages[-1].next_page_token, **request),  # type: ignore[arg-type]
            metadata=bearer(), timeout=10))
    return pages


async def test_a_plain_listing_leaves_out_revoked_and_expired_keys(
        start_replica: StartReplica) -> None:
    a = await start_replica("a", admin=True)
    manager = manager_of(a)
    working = await manager.create("acme", "working", [], ttl_seconds=0)
    revoked = await manager.create("acme", "revoked", [], ttl_seconds=0)
    await manager.revoke(revoked.record.key_id)
    rotated = await manager.create("acme", "rotated", [], ttl_seconds=0)
    successor, _ = await manager.rotate(rotated.record.key_id, overlap_seconds=-1)  # expired now
    channel, admin = a.admin()
    async with channel:
        listed = await admin.ListKeys(pb.ListKeysRequest(tenant="acme"), metadata=bearer())
        everything = await admin.ListKeys(pb.ListKeysRequest(tenant="acme", include_revoked=True),
                                          metadata=bearer())
    assert [k.key_id for k in listed.keys] == listing_order([working.record, successor.record])
    assert {k.key_id for k in everything.keys} == {
        working.record.key_id, revoked.record.key_id, rotated.record.key_id,
        successor.record.key_id}


async def test_many_large_keys_are_listed_in_pages_each_within_the_limit(
        start_replica: StartReplica) -> None:
    a = await start_replica("a", admin=True)
    manager = manager_of(a)
    created = listing_order([(await manager.create("acme", "svc", LONG_SCOPES, 0)).record
                             for _ in range(521)])  # about 4.5 MB listed at once
    channel, admin = a.admin()  # gRPC's default client limit: 4 MiB a message
    async with channel:
        pages = await every_page(admin, include_revoked=True)
    assert all(page.ByteSize() <= servicer.MAX_PAGE_BYTES for page in pages)
    assert [k.key_id for page in pages for k in page.keys] == created  # oldest first, once each


async def test_page_size_and_page_tokens(start_replica: StartReplica) -> None:
    a = await start_replica("a", admin=True)
    manager = manager_of(a)
    created = listing_order([(await manager.create("acme", "n", [], 0)).record
                             for _ in range(5)])
    channel, admin = a.admin()
    async with channel:
        pages = await every_page(admin, page_size=2)
        assert [[k.key_id for k in page.keys] for page in pages] == [
            created[0:2], created[2:4], created[4:5]]
        for request, details in [(pb.ListKeysRequest(tenant="acme", page_token="garbage"),
                                  "page_token: not a token ListKeys returned"),
                                 (pb.ListKeysRequest(tenant="acme", page_size=-1),
                                  "page_size: must not be negative")]:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await admin.ListKeys(request, metadata=bearer())
            assert (refused.value.code(), refused.value.details()) == (
                grpc.StatusCode.INVALID_ARGUMENT, details)


async def test_the_cli_lists_every_page(start_replica: StartReplica,
                                        capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    a = await start_replica("a", admin=True)
    manager = manager_of(a)
    created = listing_order([(await manager.create("acme", "n", [], 0)).record
                             for _ in range(3)])
    monkeypatch.setattr(servicer, "PAGE_SIZE", 2)
    monkeypatch.setenv("TG_ADMIN_TOKEN", ADMIN_TOKEN)
    base = ["keys", "--admin", a.admin_address or "", "--token-env", "TG_ADMIN_TOKEN"]
    for extra in ([], ["--json"]):
        capsys.readouterr()
        code = await asyncio.to_thread(main, [*base, *extra, "list", "--tenant", "acme"])
        out = capsys.readouterr().out
        assert code == 0
        if extra:
            listed = json.loads(out)
            assert [k["key_id"] for k in listed["keys"]] == created
            assert "next_page_token" not in listed
        else:
            assert [line.split()[0] for line in out.splitlines()] == created
