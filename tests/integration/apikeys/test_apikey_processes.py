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
from tenantgate.testing.ports import in_use, on_fresh_ports, stranger_on

_RUN_CLI = "import sys; from tenantgate.cli import main; sys.exit(main())"


def wait_for_ports(ports: list[int], proc: subprocess.Popen[bytes], log: Path,
                   timeout: float = 15.0) -> None:
    """Until every one of `ports` accepts, and is this process's: a stranger that took one
    would otherwise count as ready, and get the test's calls."""
    deadline = time.monotonic() + timeout
    for port in ports:
        while True:
            if proc.poll() is not None:  # e.g. its port was taken: on_fresh_ports retries
                raise RuntimeError(f"tenantgate exited: {log.read_text(errors='replace')}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"tenantgate did not listen on {port}") from None
                time.sleep(0.05)
    if (taken := stranger_on(proc.pid, ports)) is not None:
        raise RuntimeError(in_use(taken))


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()  # SIGTERM: the graceful path
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
        raise


def start_process(directory: Path, redis_url: str, admin: bool
                  ) -> tuple[subprocess.Popen[bytes], list[int]]:
    """`tenantgate serve` on fresh ports (retried while one is taken); its ports, admin first."""
    def attempt() -> tuple[subprocess.Popen[bytes], list[int]]:
        path, grpc_port, admin_port = write_config(directory, redis_url, admin=admin,
                                                   cache_ttl="60s")
        log = directory / "stderr.log"  # a file: a pipe nobody reads can fill and block it
        with open(log, "wb") as err:
            proc = subprocess.Popen([sys.executable, "-c", _RUN_CLI, "serve", "--config",
                                     str(path), "--log-level", "WARNING"],
                                    stdout=subprocess.DEVNULL, stderr=err)
        ports = [*([admin_port] if admin_port else []), grpc_port]
        try:
            wait_for_ports(ports, proc, log)
        except BaseException:
            proc.kill()
            proc.wait(timeout=10)
            raise
        return proc, ports

    return on_fresh_ports(attempt)


@pytest.fixture
def two_processes(tmp_path: Path, redis_url: str) -> Iterator[tuple[int, int, int]]:
    procs = []
    try:
        ports = []
        for name, admin in (("a", True), ("b", False)):
            proc, its_ports = start_process(tmp_path / name, redis_url, admin)
            procs.append(proc)
            ports += its_ports
        yield ports[0], ports[1], ports[2]
    finally:
        for proc in procs:
            proc.terminate()  # SIGTERM to both first: they drain at the same time
        failures = []
        for proc in procs:  # each is waited for (and killed if need be) whatever the other did
            try:
                stop(proc)
            except subprocess.TimeoutExpired as exc:
                failures.append(exc)
        assert not failures, f"did not stop on SIGTERM: {failures}"


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
