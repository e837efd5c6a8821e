"""Key management through the admin API leaves an audit line per change, never the secret."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import pytest
from apikey_support import StartReplica, bearer
from prometheus_client import REGISTRY
from tenantgate._gen.tenantgate.admin.v1 import apikeys_pb2 as pb
from tenantgate._gen.tenantgate.admin.v1.apikeys_pb2_grpc import ApiKeyAdminStub
from tenantgate.testing.redis import RedisServer


async def test_create_rotate_and_revoke_each_write_an_audit_line(
        start_replica: StartReplica) -> None:
    # Who made, rotated or revoked which key was in no log: a stolen admin token could mint
    # keys for any tenant without a trace.
    a = await start_replica("a", admin=True)
    channel, admin = a.admin()
    async with channel:
        created = await admin.CreateKey(pb.CreateKeyRequest(tenant="acme", ttl_seconds=3600),
                                        metadata=bearer())
        rotated = await admin.RotateKey(pb.RotateKeyRequest(key_id=created.key.key_id),
                                        metadata=bearer())
        await admin.RevokeKey(pb.RevokeKeyRequest(key_id=created.key.key_id), metadata=bearer())
        await admin.ListKeys(pb.ListKeysRequest(tenant="acme"), metadata=bearer())  # no change
    audit_file = Path(a.app.config_path).parent / "audit.log"
    text = audit_file.read_text()
    events = [line for line in map(json.loads, text.splitlines())
              if line["event"].startswith("apikey_")]
    assert [(e["event"], e["key_id"], e["tenant"], e["replaces"]) for e in events] == [
        ("apikey_created", created.key.key_id, "acme", None),
        ("apikey_rotated", rotated.new_key.key_id, "acme", created.key.key_id),
        ("apikey_revoked", created.key.key_id, "acme", None),
    ]
    assert events[0]["expires_at"] == created.key.expires_at
    assert all(e["peer"].startswith("ipv4:127.0.0.1:") for e in events)
    for api_key in (created.api_key, rotated.api_key):
        assert api_key[-43:] not in text  # the secret: 43 base64url characters at the end


async def test_a_call_without_the_admin_token_is_counted(start_replica: StartReplica) -> None:
    # A refused admin call left no trace at all: guessing at the credential that mints keys
    # for any tenant was invisible.
    a = await start_replica("a", admin=True)
    before = REGISTRY.get_sample_value("tenantgate_admin_auth_failures_total") or 0.0
    channel, admin = a.admin()
    async with channel:
        for metadata in (bearer("not-the-token"), []):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await admin.ListKeys(pb.ListKeysRequest(tenant="acme"), metadata=metadata)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        await admin.ListKeys(pb.ListKeysRequest(tenant="acme"), metadata=bearer())
    assert REGISTRY.get_sample_value("tenantgate_admin_auth_failures_total") == before + 2


async def give_up_on_revoke(admin: ApiKeyAdminStub, key_id: str, store: RedisServer,
                            resume_after: float = 0.0,
                            before_resume: Callable[[], Awaitable[None]] | None = None) -> None:
    """RevokeKey with a 0.5 s deadline while the store hangs (SIGSTOP): the client gives up
    mid-call. The store resumes at once (after `before_resume`, if given), or `resume_after`
    seconds later (in the background)."""
    pid = store.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as gave_up:
            await admin.RevokeKey(pb.RevokeKeyRequest(key_id=key_id), metadata=bearer(),
                                  timeout=0.5)
        assert gave_up.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        if before_resume is not None:
            await asyncio.wait_for(before_resume(), timeout=30)  # a hang breaker only
    finally:
        if resume_after:
            asyncio.get_running_loop().call_later(resume_after, os.kill, pid, signal.SIGCONT)
        else:
            os.kill(pid, signal.SIGCONT)


async def test_a_revoke_the_client_gave_up_on_is_still_audited(
        start_replica: StartReplica, redis_server: RedisServer) -> None:
    # The line was written after the store answered: a client whose deadline passed while
    # Redis ran the revoke cancelled the call, and the key was revoked with no audit line.
    a = await start_replica("a", admin=True, redis_timeout="10s")
    channel, admin = a.admin()
    async with channel:
        created = await admin.CreateKey(pb.CreateKeyRequest(tenant="acme"), metadata=bearer())
        await give_up_on_revoke(admin, created.key.key_id, redis_server)
        audit_file = Path(a.app.config_path).parent / "audit.log"

        async def revoke_audited() -> None:
            while not any('"apikey_revoked"' in line
                          for line in audit_file.read_text().splitlines()):
                await asyncio.sleep(0.05)

        await asyncio.wait_for(revoke_audited(), timeout=30)  # a hang breaker only
        listed = await admin.ListKeys(pb.ListKeysRequest(tenant="acme", include_revoked=True),
                                      metadata=bearer())
        assert [k.revoked for k in listed.keys] == [True]


async def test_a_stop_waits_for_a_key_change_whose_client_gave_up(
        start_replica: StartReplica, redis_server: RedisServer) -> None:
    # The change ran on, shielded, but stop() closed the runtime under it: the revoke landed
    # in Redis and its audit line was lost to a closed audit file.
    a = await start_replica("a", admin=True, redis_timeout="10s")
    channel, admin = a.admin()
    async with channel:
        created = await admin.CreateKey(pb.CreateKeyRequest(tenant="acme"), metadata=bearer())
        try:
            await give_up_on_revoke(admin, created.key.key_id, redis_server, resume_after=1.0)
            lost_before = REGISTRY.get_sample_value("tenantgate_audit_write_errors_total")
            await asyncio.wait_for(a.app.stop(), timeout=30)  # a hang breaker only
        finally:
            assert redis_server.pid is not None
            os.kill(redis_server.pid, signal.SIGCONT)  # whatever happened: later tests need it
    text = (Path(a.app.config_path).parent / "audit.log").read_text()
    assert any(json.loads(line)["event"] == "apikey_revoked" for line in text.splitlines())
    assert REGISTRY.get_sample_value("tenantgate_audit_write_errors_total") == lost_before


async def test_a_key_change_that_fails_after_its_client_gave_up_is_logged(
        start_replica: StartReplica, redis_server: RedisServer,
        caplog: pytest.LogCaptureFixture) -> None:
    # Its exception went unretrieved: only asyncio's "Task exception was never retrieved",
    # when the task was collected, if ever.
    a = await start_replica("a", admin=True, redis_timeout="10s")
    assert a.app.admin is not None
    servicer = a.app.admin._servicer

    async def server_saw_the_client_go() -> None:
        # The client's deadline reaches the server's handler a moment after the client: the
        # store must answer only after that, or the change ends with its caller still there
        # (under load it did, and nothing was orphaned to log).
        while not servicer._orphans:
            await asyncio.sleep(0.01)

    channel, admin = a.admin()
    async with channel:
        await give_up_on_revoke(admin, "0123456789abcdef", redis_server,
                                before_resume=server_saw_the_client_go)
        with caplog.at_level(logging.WARNING):
            await asyncio.wait_for(a.app.stop(), timeout=30)  # waits for the change to end
            gc.collect()
    said = [r.getMessage() for r in caplog.records]
    assert any("a key change whose client had gone failed" in m for m in said), said
    assert not any("never retrieved" in m for m in said), said
