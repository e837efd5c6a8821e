"""Two `tenantgate serve` processes sharing one Redis: a key revoked through one process's
admin API is denied by the other process within the bound."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from apikey_support import bearer, write_config
from envoy.service.auth.v3 import external_auth_pb2_grpc
from google.rpc import code_pb2
from tenantgate._gen.tenantgate.admin.v1 import apikeys_pb2 as pb
from tenantgate._gen.tenantgate.admin.v1 import apikeys_pb2_grpc
from tenantgate.testing.check import check_request

_RUN_CLI = "import sys; from tenantgate.cli import main; sys.exit(main())"


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            assert proc.stderr is not None
            raise RuntimeError(f"tenantgate exited: {proc.stderr.read().decode()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"tenantgate did not listen on {port}")


@pytest.fixture
def two_processes(tmp_path: Path, redis_url: str) -> Iterator[tuple[int, int, int]]:
    procs = []
    try:
        ports = []
        for name, admin in (("a", True), ("b", False)):
            path, grpc_port, admin_port = write_config(tmp_path / name, redis_url, admin=admin,
                                                       cache_ttl="60s")
            proc = subprocess.Popen([sys.executable, "-c", _RUN_CLI, "serve", "--config", str(path),
                                     "--log-level", "WARNING"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            procs.append(proc)
            wait_for_port(grpc_port, proc)
            if admin_port:
                wait_for_port(admin_port, proc)
                ports.append(admin_port)
            ports.append(grpc_port)
        yield ports[0], ports[1], ports[2]
    finally:
        for proc in procs:
            proc.terminate()  # SIGTERM: the graceful path
        for proc in procs:
            proc.wait(timeout=15)
            assert proc.stderr is not None
            proc.stderr.close()


async def test_revocation_through_one_process_reaches_the_other(
        two_processes: tuple[int, int, int]) -> None:
    admin_port, a_port, b_port = two_processes
    async with grpc.aio.insecure_channel(f"127.0.0.1:{admin_port}") as admin_channel, \
            grpc.aio.insecure_channel(f"127.0.0.1:{a_port}") as a_channel, \
            grpc.aio.insecure_channel(f"127.0.0.1:{b_port}") as b_channel:
        admin = apikeys_pb2_grpc.ApiKeyAdminStub(admin_channel)
        checks = [external_auth_pb2_grpc.AuthorizationStub(c) for c in (a_channel, b_channel)]
        created = await admin.CreateKey(pb.CreateKeyRequest(tenant="globex"), metadata=bearer())
        request = check_request("/", headers={"x-api-key": created.api_key})
        for check in checks:
            assert (await check.Check(request, timeout=5)).status.code == code_pb2.OK
        await admin.RevokeKey(pb.RevokeKeyRequest(key_id=created.key.key_id), metadata=bearer())
        deadline = time.monotonic() + 5.0  # far below cache_ttl (60 s): the push did it
        for check in checks:
            while (await check.Check(request, timeout=5)).status.code == code_pb2.OK:
                assert time.monotonic() < deadline, "revocation did not arrive within 5 s"
                await asyncio.sleep(0.02)
