"""Two `tenantgate serve` processes sharing one Redis (plain and Cluster): 200 concurrent
Checks for a tenant whose bucket holds 20 with a negligible refill admit exactly 20."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

import grpc
import redis
import yaml
from envoy.service.auth.v3 import external_auth_pb2_grpc
from google.rpc import code_pb2
from tenantgate.testing.binaries import free_port
from tenantgate.testing.check import DevIssuer, check_request
from tenantgate.testing.envoy import TenantgateProcess
from tenantgate.testing.ports import on_fresh_ports
from tenantgate.testing.redis import RedisClusterServers, RedisServer


def write_config(directory: Path, issuer: DevIssuer, url: str, port: int) -> Path:
    key_file = directory / "context.key"
    if not key_file.exists():
        key_file.write_text(secrets.token_hex(32))
    document: dict[str, Any] = {
        "listen": {"grpc": f"127.0.0.1:{port}", "metrics": None},
        "issuers": [issuer.config()],
        "context": {"active_key": "c1", "keys": [{"id": "c1",
                                                   "secret": {"fromFile": "context.key"}}]},
        "audit": {"enabled": False},
        "quota": {"enabled": True, "store": "redis", "redis": {"url": url, "timeout": "2s"},
                  "default_plan": "free",
                  "plans": {"free": {"limits": [{"rate": "20/day", "burst": 20}]}}},
    }
    path = directory / f"tenantgate-{port}.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


async def admitted(ports: list[int], token: str, per_server: int) -> int:
    async def one(stub: Any, i: int) -> bool:
        request = check_request("/items", headers={"authorization": f"Bearer {token}"},
                                request_id=f"r{i}")
        response = await stub.Check(request, timeout=30)  # only a hang breaker
        return bool(response.status.code == code_pb2.OK)

    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{p}") for p in ports]
    try:
        stubs = [external_auth_pb2_grpc.AuthorizationStub(c) for c in channels]
        results = await asyncio.gather(*(one(stub, i) for stub in stubs
                                         for i in range(per_server)))
        return sum(results)
    finally:
        for channel in channels:
            await channel.close()


def start_server(tmp_path: Path, issuer: DevIssuer, url: str) -> TenantgateProcess:
    def attempt() -> TenantgateProcess:  # a new free port each time
        port = free_port()
        return TenantgateProcess(write_config(tmp_path, issuer, url, port),
                                 grpc=f"127.0.0.1:{port}").start()

    return on_fresh_ports(attempt)


async def run_two_servers(tmp_path: Path, url: str) -> int:
    issuer = DevIssuer()
    procs: list[TenantgateProcess] = []
    try:
        for _ in range(2):
            procs.append(start_server(tmp_path, issuer, url))
        ports = [int(str(proc.grpc).rpartition(":")[2]) for proc in procs]
        return await admitted(ports, issuer.token("acme"), 100)
    finally:
        for proc in procs:
            proc.close()


async def test_two_servers_one_redis_admit_exactly_20(tmp_path: Path,
                                                      fresh_redis: RedisServer) -> None:
    assert await run_two_servers(tmp_path, fresh_redis.url) == 20


async def test_two_servers_one_redis_cluster_admit_exactly_20(
        tmp_path: Path, redis_cluster: RedisClusterServers) -> None:
    for node in redis_cluster.nodes:
        with redis.Redis(port=node.port) as client:
            client.flushall()
    assert await run_two_servers(tmp_path, redis_cluster.url) == 20
