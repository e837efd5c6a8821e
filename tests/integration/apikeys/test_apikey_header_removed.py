"""An allowed API-key request does not carry its key on to the backend: the allow removes the
API-key header (credentials.api_key_header), so the long-lived secret stops at tenantgate and
the backend sees the tenant, the subject `apikey:<key id>` and the signed context instead.
Through a running App and its Check listener, against a real redis-server."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
import yaml
from apikey_support import App, bearer, write_config
from envoy.service.auth.v3 import external_auth_pb2_grpc
from google.rpc import code_pb2
from tenantgate._gen.tenantgate.admin.v1 import apikeys_pb2 as pb
from tenantgate._gen.tenantgate.admin.v1 import apikeys_pb2_grpc
from tenantgate.testing.check import check_request


@pytest.mark.parametrize("header", ["x-api-key", "x-client-key"])
async def test_an_allowed_api_key_request_does_not_forward_its_key(
        tmp_path: Path, redis_url: str, header: str) -> None:
    path, grpc_port, admin_port = write_config(tmp_path / "a", redis_url, admin=True)
    document = yaml.safe_load(path.read_text())
    document["credentials"] = {"api_key_header": header}
    path.write_text(yaml.safe_dump(document))
    app = App(str(path))
    await app.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{admin_port}") as channel:
            created = await apikeys_pb2_grpc.ApiKeyAdminStub(channel).CreateKey(
                pb.CreateKeyRequest(tenant="acme"), metadata=bearer(), timeout=5)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            response = await external_auth_pb2_grpc.AuthorizationStub(channel).Check(
                check_request("/v1/things", headers={header: created.api_key}), timeout=5)
    finally:
        await app.stop()
    assert response.status.code == code_pb2.OK
    assert header in response.ok_response.headers_to_remove
    assert created.api_key not in str(response)  # nor is it set or echoed anywhere
