"""Pins the Envoy behaviour the signed context depends on: an OK CheckResponse's
`headers_to_remove` is applied *after* its headers, so a header both set and removed never
reaches the backend. That is why tenantgate never lists a header it sets (decision.py, and
tests/unit/test_decision.py::test_no_header_is_both_set_and_removed)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import yaml
from e2e_support import EchoBackend, base_config, header_values, received
from envoy.config.core.v3.base_pb2 import HeaderValue, HeaderValueOption
from envoy.service.auth.v3 import external_auth_pb2_grpc
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse, OkHttpResponse
from google.rpc import code_pb2, status_pb2
from tenantgate.config.envoy import EnvoyOptions, render
from tenantgate.config.load import load_config
from tenantgate.testing.binaries import free_port
from tenantgate.testing.envoy import EnvoyProcess
from tenantgate.testing.ports import on_fresh_ports

OVERWRITE = HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


class SetAndRemove(external_auth_pb2_grpc.AuthorizationServicer):
    """Allows, setting x-both (also listed for removal) and x-only-set (not listed)."""

    async def Check(self, request: CheckRequest, context: object
                    ) -> CheckResponse:
        headers = [HeaderValueOption(header=HeaderValue(key=k, value="from-authz"),
                                     append_action=OVERWRITE) for k in ("x-both", "x-only-set")]
        return CheckResponse(status=status_pb2.Status(code=code_pb2.OK),
                             ok_response=OkHttpResponse(headers=headers,
                                                        headers_to_remove=["x-both"]))


@contextlib.asynccontextmanager
async def authz_server() -> AsyncIterator[str]:
    # Port 0, read back, and no SO_REUSEPORT (gRPC's default is on): the port is this
    # server's alone, with no window between picking it and binding it.
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(SetAndRemove(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    assert port > 0, "could not bind the authz server"
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


async def test_envoy_applies_headers_to_remove_after_the_ok_headers(
        tmp_path: Path, envoy_path: str) -> None:
    config_path = tmp_path / "tenantgate.yaml"
    (tmp_path / "jwks.json").write_text('{"keys": []}')
    config_path.write_text(yaml.safe_dump(base_config(tmp_path)))
    echo = EchoBackend().start()
    try:
        async with authz_server() as authz:
            def start_envoy() -> tuple[EnvoyProcess, str]:  # fresh ports on every attempt
                listen = f"127.0.0.1:{free_port()}"
                bootstrap = render(load_config(config_path), EnvoyOptions(
                    mode="front", listen=listen, upstream=echo.address, authz=authz,
                    admin=f"127.0.0.1:{free_port()}", rate_limit=False))
                return EnvoyProcess(bootstrap, binary=envoy_path).start(), listen

            envoy, listen = await asyncio.to_thread(on_fresh_ports, start_envoy)
            try:
                async with httpx.AsyncClient(base_url=f"http://{listen}", timeout=10) as client:
                    response = await client.get("/anything", headers={"x-both": "from-client"})
            finally:
                await asyncio.to_thread(envoy.close)  # and its directory
    finally:
        echo.stop()
    echoed = received(response)
    assert header_values(echoed, "x-only-set") == ["from-authz"]
    assert header_values(echoed, "x-both") == []  # set, then removed: the value is lost

