"""Every bad API key gets the same CheckResponse, and the plaintext secret never shows up in
Redis, the audit log, log records, metrics or error messages."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import grpc
import pytest
import redis
from apikey_support import StartReplica, bearer
from google.rpc import code_pb2
from prometheus_client import REGISTRY, generate_latest
from tenantgate._gen.tenantgate.admin.v1 import apikeys_pb2 as pb
from tenantgate.identity.apikeys import format_key, new_secret
from tenantgate.observe.apikeys import APIKEY_CHECKS


def checks(result: str) -> float:
    return sum(REGISTRY.get_sample_value("tenantgate_apikey_checks_total",
                                         {"tenant": t, "result": result}) or 0.0
               for t in ("acme", "globex", "other"))


async def test_expired_revoked_malformed_wrong_prefix_and_wrong_secret_look_the_same(
        start_replica: StartReplica, redis_url: str) -> None:
    a = await start_replica("a", admin=True)
    channel, admin = a.admin()
    async with channel:
        revoked = await admin.CreateKey(pb.CreateKeyRequest(tenant="acme"), metadata=bearer())
        await admin.RevokeKey(pb.RevokeKeyRequest(key_id=revoked.key.key_id), metadata=bearer())
        expired = await admin.CreateKey(pb.CreateKeyRequest(tenant="acme", ttl_seconds=3600),
                                        metadata=bearer())
        live = await admin.CreateKey(pb.CreateKeyRequest(tenant="acme"), metadata=bearer())
    with redis.Redis.from_url(redis_url) as client:  # expire it without waiting
        client.hset(f"tenantgate:apikey:{expired.key.key_id}", "expires_at",
                    str(int(time.time()) - 1))
    a.app.runtime.api_keys.invalidate()
    live_id, live_secret = live.api_key.split("_")[1], live.api_key.split("_", 2)[2]
    bad = {
        "revoked": revoked.api_key,
        "expired": expired.api_key,
        "malformed": "not-a-key",
        "wrong prefix": "abc" + live.api_key[3:],
        "unknown id": format_key("tgk", "0123456789abcdef", live_secret),
        "right id, wrong secret": format_key("tgk", live_id, new_secret()),
        "truncated secret": live.api_key[:-1],
    }
    before = {r: checks(r) for r in ("invalid", "revoked", "expired")}
    responses = {name: await a.check(key, request_id="same-id") for name, key in bad.items()}
    first = responses["revoked"]
    assert first.status.code == code_pb2.PERMISSION_DENIED
    assert first.denied_response.status.code == 401
    for name, response in responses.items():
        assert response.SerializeToString(deterministic=True) == \
            first.SerializeToString(deterministic=True), name
    # The reasons did differ inside: the matrix really hit revoked, expired and invalid.
    assert checks("revoked") - before["revoked"] == 1
    assert checks("expired") - before["expired"] == 1
    assert checks("invalid") - before["invalid"] == 5
    allowed = await a.check(live.api_key)
    assert allowed.status.code == code_pb2.OK  # and the good key next to them still works


async def test_plaintext_secret_never_appears_in_redis_logs_metrics_or_errors(
        start_replica: StartReplica, redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    a = await start_replica("a", admin=True)
    b = await start_replica("b")
    channel, admin = a.admin()
    async with channel:
        created = await admin.CreateKey(pb.CreateKeyRequest(tenant="acme", name="n"),
                                        metadata=bearer())
        rotated = await admin.RotateKey(pb.RotateKeyRequest(key_id=created.key.key_id),
                                        metadata=bearer())
        for replica in (a, b):
            for key in (created.api_key, rotated.api_key):
                await replica.check(key)
                await replica.check(key + "x")  # malformed: lands in denial paths
        await admin.RevokeKey(pb.RevokeKeyRequest(key_id=created.key.key_id), metadata=bearer())
        await a.check(created.api_key)
        errors = []
        for request in (pb.RotateKeyRequest(key_id=created.api_key),
                        pb.RotateKeyRequest(key_id=created.key.key_id)):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await admin.RotateKey(request, metadata=bearer())
            errors.append(refused.value.details() or "")
        await a.app.runtime.api_keys.flush_usage()
        await b.app.runtime.api_keys.flush_usage()
    secrets_ = [k.split("_", 2)[2] for k in (created.api_key, rotated.api_key)]

    dumped: list[bytes] = []
    with redis.Redis.from_url(redis_url) as client:
        for name in client.scan_iter(count=1000):
            kind = client.type(name)
            if kind == b"hash":
                value = client.hgetall(name)
                dumped += [*value.keys(), *value.values()]
            elif kind == b"set":
                dumped += list(client.smembers(name))
            else:
                dumped.append(client.dump(name) or b"")
            dumped.append(name)
    assert any(created.key.key_id.encode() in d for d in dumped)  # the scan saw the records
    audit = (a.app.runtime.config.audit.path, b.app.runtime.config.audit.path)
    texts = {"redis": b"\n".join(dumped).decode("latin-1"),
             "audit": "".join(Path(p).read_text() for p in audit),
             "logs": caplog.text, "metrics": generate_latest().decode(),
             "errors": "\n".join(errors)}
    assert "apikey_revoked_used" in texts["audit"]  # the audit log was written and read
    for where, text in texts.items():
        for secret in secrets_:
            assert secret not in text, where
            assert secret[:16] not in text, where  # not even a prefix of it
    assert APIKEY_CHECKS.labels("acme", "ok")._value.get() >= 4


async def test_the_audit_line_of_a_refused_key_names_the_stored_key_it_was_about(
        start_replica: StartReplica) -> None:
    # A wrong secret for a real key id, a revoked or an expired key: the audit line said
    # tenant null, key_id null, so an attack on one tenant's key could not be told apart from
    # noise. The client still sees the same 401 whatever the key (the test above).
    a = await start_replica("a", admin=True)
    channel, admin = a.admin()
    async with channel:
        live = await admin.CreateKey(pb.CreateKeyRequest(tenant="acme"), metadata=bearer())
        revoked = await admin.CreateKey(pb.CreateKeyRequest(tenant="globex"), metadata=bearer())
        await admin.RevokeKey(pb.RevokeKeyRequest(key_id=revoked.key.key_id), metadata=bearer())
    live_id = live.key.key_id
    presented = {
        "wrong-secret": format_key("tgk", live_id, new_secret()),
        "revoked": revoked.api_key,
        "unknown-id": format_key("tgk", "0123456789abcdef", new_secret()),
        "malformed": "not-a-key",
    }
    for name, key in presented.items():
        assert (await a.check(key, request_id=name)).denied_response.status.code == 401
    lines = [json.loads(line) for line in
             (Path(a.app.config_path).parent / "audit.log").read_text().splitlines()]
    named = {line["request_id"]: (line["tenant"], line["key_id"], line["reason"])
             for line in lines if line.get("event") == "check"}
    assert named == {
        "wrong-secret": ("acme", live_id, "api_key_invalid"),
        "revoked": ("globex", revoked.key.key_id, "api_key_revoked"),
        "unknown-id": (None, None, "api_key_invalid"),
        "malformed": (None, None, "api_key_invalid"),
    }
