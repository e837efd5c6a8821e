"""A reload keeps what each issuer's key set knows (keys, freshness, ETag, discovered URL)
while its key source is unchanged: a SIGHUP during an IdP outage (operators send one to rotate
context keys) must not turn every JWT Check into 503 while max_stale still allows the keys. A
changed source starts empty."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from app_support import StartedApps
from envoy.service.auth.v3.external_auth_pb2 import CheckResponse
from envoy.service.auth.v3.external_auth_pb2_grpc import AuthorizationStub
from tenantgate.app import App
from tenantgate.testing.binaries import free_port
from tenantgate.testing.check import DevIssuer, check_request, config_document
from tenantgate.testing.jwks_server import JwksServer

Start = Callable[[DevIssuer, dict[str, Any]], Awaitable[App]]


@pytest.fixture
def jwks() -> JwksServer:
    return JwksServer(max_age=300)  # started by each test, stopped for the outage


@pytest.fixture
async def start_app(tmp_path: Path, jwks: JwksServer) -> AsyncIterator[Start]:
    apps = StartedApps()

    async def start(idp: DevIssuer, source: dict[str, Any]) -> App:
        def write() -> Path:  # a new gRPC port each time
            document = config_document(tmp_path, [idp.config(jwks={
                **source, "allow_insecure_http": True})])
            document["listen"].update({"grpc": f"127.0.0.1:{free_port()}",
                                       "drain_timeout": "1s"})
            path = tmp_path / "tenantgate.yaml"
            path.write_text(yaml.safe_dump(document))
            return path

        return await apps.start(write)

    with jwks:
        yield start
    await apps.stop_all()


async def check(app: App, token: str) -> CheckResponse:
    assert app.runtime.config.listen.grpc is not None
    async with grpc.aio.insecure_channel(app.runtime.config.listen.grpc) as channel:
        return await AuthorizationStub(channel).Check(
            check_request("/notes", headers={"authorization": f"Bearer {token}"}), timeout=10)


def status(response: CheckResponse) -> int:
    return response.denied_response.status.code if response.HasField("denied_response") else 200


def set_jwks(path: Path, **changes: Any) -> None:
    document = yaml.safe_load(path.read_text())
    document["issuers"][0]["jwks"].update(changes)
    path.write_text(yaml.safe_dump(document))


@pytest.mark.parametrize("discovery", [False, True], ids=["url", "discovery"])
async def test_a_reload_during_a_jwks_outage_keeps_the_known_keys(
        start_app: Start, jwks: JwksServer, discovery: bool) -> None:
    idp = DevIssuer(issuer=jwks.base_url)  # discovery asks the issuer's own URL
    jwks.keys = idp.jwks()
    app = await start_app(idp, {"discovery": True} if discovery else {"url": jwks.jwks_url})
    assert status(await check(app, idp.token(sub="alice"))) == 200
    jwks.stop()  # the IdP is down
    assert await app.reload()  # e.g. a context key rotation
    # A token the new runtime has not seen (its token cache starts empty): before, 503.
    assert status(await check(app, idp.token(sub="bob"))) == 200


async def test_a_reload_that_changes_the_key_source_starts_empty(
        start_app: Start, jwks: JwksServer) -> None:
    idp = DevIssuer()
    jwks.keys = idp.jwks()
    app = await start_app(idp, {"url": jwks.jwks_url})
    assert status(await check(app, idp.token(sub="alice"))) == 200
    jwks.stop()
    set_jwks(Path(app.config_path), url=jwks.jwks_url + "?v=2")
    assert await app.reload()
    # The keys came from another URL: they say nothing about this one's.
    assert status(await check(app, idp.token(sub="bob"))) == 503
