"""Check over a real gRPC channel against a running tenantgate (in-process App, or the
`tenantgate serve` process for signals), with JWKS from a real local HTTP server."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from app_support import StartedApps, app_on_fresh_ports
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse
from envoy.service.auth.v3.external_auth_pb2_grpc import AuthorizationStub
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tenantgate.app import App
from tenantgate.context import KeyRing
from tenantgate.testing.binaries import free_port
from tenantgate.testing.check import (
    DevIssuer,
    check_request,
    config_document,
    record_verifications,
)
from tenantgate.testing.envoy import TenantgateProcess
from tenantgate.testing.jwks_server import JwksServer
from tenantgate.testing.ports import on_fresh_ports

OVERWRITE = 2  # HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
SERVING, NOT_SERVING = (health_pb2.HealthCheckResponse.SERVING,
                        health_pb2.HealthCheckResponse.NOT_SERVING)


@pytest.fixture(scope="module")
def idp() -> DevIssuer:
    issuer = DevIssuer(issuer="https://idp.test", name="idp", kid="k1")
    issuer.add_key("k2")
    return issuer


@pytest.fixture
def jwks_max_age() -> int:
    # 1 s: refreshes are seen quickly. A test that must know which fetch is the one its Check
    # made parametrizes this to an hour: then no background refresh comes meanwhile.
    return 1


@pytest.fixture
def jwks(idp: DevIssuer, jwks_max_age: int) -> Iterator[JwksServer]:
    with JwksServer(idp.jwks(["k1"]), max_age=jwks_max_age) as server:
        yield server


async def fetch_begun(jwks: JwksServer, count: int) -> None:
    """Until the JWKS server has seen `count` fetches arrive (the bound only breaks a hang)."""
    assert await asyncio.to_thread(jwks.wait_begun, count, 30), "the fetch never arrived"


def served(server: JwksServer, **extra: Any) -> dict[str, Any]:
    return {"url": server.jwks_url, "allow_insecure_http": True, "min_ttl": "0s",
            "refetch_interval": "1s", **extra}  # the least the config allows


def write_config(directory: Path, idp: DevIssuer, jwks: dict[str, Any], **sections: Any
                 ) -> Path:
    document = config_document(directory, [idp.config(jwks=jwks)], **sections)
    document["listen"] = {"grpc": f"127.0.0.1:{free_port()}", "metrics": None,
                          "drain_timeout": "3s", **sections.get("listen", {})}
    path = directory / "tenantgate.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


Start = Callable[..., Awaitable[App]]


@pytest.fixture
async def start_app(tmp_path: Path, idp: DevIssuer) -> AsyncIterator[Start]:
    apps = StartedApps()

    async def start(jwks: dict[str, Any], **sections: Any) -> App:
        # write_config picks a new gRPC port each time
        return await apps.start(lambda: write_config(tmp_path, idp, jwks, **sections))

    yield start
    await apps.stop_all()


def target(app: App) -> str:
    cfg = app.runtime.config.listen
    return cfg.grpc or f"unix:{cfg.uds}"


async def check(address: str, request: CheckRequest) -> CheckResponse:
    async with grpc.aio.insecure_channel(address) as channel:
        return await AuthorizationStub(channel).Check(request, timeout=10)


def bearer(token: str, **headers: str) -> CheckRequest:
    return check_request("/notes", headers={"authorization": f"Bearer {token}", **headers})


def denied(response: CheckResponse) -> int:
    return response.denied_response.status.code if response.HasField("denied_response") else 0


async def test_allow_sets_tenant_and_signed_context_over_any_client_copy(
        start_app: Start, idp: DevIssuer, jwks: JwksServer, tmp_path: Path) -> None:
    app = await start_app(served(jwks))
    response = await check(target(app), bearer(
        idp.token(tenant="acme", sub="alice"), **{"x-tenant-id": "globex",
                                                  "x-tenant-context": "forged"}))
    assert response.status.code == 0, response
    ok = response.ok_response
    assert all(h.append_action == OVERWRITE for h in ok.headers)
    values = {h.header.key: h.header.value for h in ok.headers}
    assert values["x-tenant-id"] == "acme"
    ring = KeyRing({"c1": (tmp_path / "context.key").read_bytes().strip()}, "c1")
    claims = ring.verify(values["x-tenant-context"])
    assert (claims.tenant, claims.subject, claims.request_id) == ("acme", "alice", "req-test")
    # Envoy applies headers_to_remove after the OK headers: a set header listed there is lost.
    assert not set(values) & set(ok.headers_to_remove)
    # The trusted headers tenantgate does not set, and the override headers (a mesh's proxy
    # may forward them, and a backend honouring one would run another method or path).
    assert set(ok.headers_to_remove) == {"x-tenant-plan", "x-tenant-scopes", "x-tenant-roles",
                                         "x-http-method-override", "x-http-method",
                                         "x-method-override", "x-original-url", "x-rewrite-url",
                                         "x-original-uri", "x-forwarded-uri"}
    assert response.dynamic_metadata["tenant"] == "acme"
    assert response.dynamic_metadata["subject"] == "alice"


async def test_rotation_new_key_added_and_old_removed_without_restart(
        start_app: Start, idp: DevIssuer, jwks: JwksServer) -> None:
    app = await start_app(served(jwks))
    assert not denied(await check(target(app), bearer(idp.token(kid="k1"))))
    assert denied(await check(target(app), bearer(idp.token(kid="k2")))) == 401
    jwks.keys = idp.jwks(["k1", "k2"])
    # Seen once the unknown-kid refetch interval (1 s) from the first k2 has passed: poll.
    deadline = time.monotonic() + 10
    while denied(await check(target(app), bearer(idp.token(kid="k2")))):
        assert time.monotonic() < deadline, "added key never accepted"
        await asyncio.sleep(0.1)
    jwks.keys = idp.jwks(["k2"])
    # The removal is seen on the next refresh (max-age 1 s): poll, every token new.
    deadline = time.monotonic() + 10
    while not denied(await check(target(app), bearer(idp.token(kid="k1")))):
        assert time.monotonic() < deadline, "removed key still accepted"
        await asyncio.sleep(0.1)
    assert not denied(await check(target(app), bearer(idp.token(kid="k2"))))


async def test_a_cached_token_of_a_withdrawn_key_is_refused_once_the_removal_is_seen(
        start_app: Start, idp: DevIssuer, jwks: JwksServer) -> None:
    jwks.keys = idp.jwks(["k1", "k2"])
    app = await start_app(served(jwks))
    withdrawn, kept = idp.token(kid="k1"), idp.token(kid="k2")
    for token in (withdrawn, kept):  # verified once, then answered from the token cache
        assert not denied(await check(target(app), bearer(token)))
    jwks.keys = idp.jwks(["k2"])
    # No new token asks for keys: tenantgate refreshes them itself (max-age 1 s). Poll with
    # the same, cached token.
    deadline = time.monotonic() + 10
    while not denied(await check(target(app), bearer(withdrawn))):
        assert time.monotonic() < deadline, "a cached token of a withdrawn key still accepted"
        await asyncio.sleep(0.1)
    assert denied(await check(target(app), bearer(withdrawn))) == 401
    assert not denied(await check(target(app), bearer(kept)))  # verified again, still good


async def test_a_bad_signature_is_verified_once_until_the_issuers_keys_change(
        start_app: Start, idp: DevIssuer, jwks: JwksServer) -> None:
    app = await start_app(served(jwks))
    verified = record_verifications(app.runtime)
    replacement = DevIssuer(issuer=idp.issuer, name=idp.name, kid="k1")  # a new key, same kid
    token = replacement.token()
    for _ in range(2):  # a replayed forgery: refused alike, verified once
        assert denied(await check(target(app), bearer(token))) == 401
    assert verified == [token]
    jwks.keys = replacement.jwks()  # a key replaced under its kid: rare, but it is seen
    deadline = time.monotonic() + 10  # the refresh comes within max-age (1 s)
    while denied(await check(target(app), bearer(token))):
        assert time.monotonic() < deadline, "a refusal outlived the key change"
        await asyncio.sleep(0.1)


async def test_outage_known_keys_serve_until_max_stale_then_503(
        start_app: Start, idp: DevIssuer, jwks: JwksServer) -> None:
    app = await start_app(served(jwks, max_ttl="1s", max_stale="1s"))
    assert not denied(await check(target(app), bearer(idp.token())))
    loaded_at = time.monotonic()
    jwks.failing = True
    assert not denied(await check(target(app), bearer(idp.token())))  # stale, still trusted
    assert denied(await check(target(app), bearer(idp.token(kid="k2")))) == 401  # unknown kid
    await asyncio.sleep(max(0.0, loaded_at + 2.2 - time.monotonic()))  # past ttl + max_stale
    response = await check(target(app), bearer(idp.token()))
    assert denied(response) == 503
    assert json.loads(response.denied_response.body)["error"] == "unavailable"
    jwks.failing = False
    deadline = time.monotonic() + 10  # recovers once the endpoint answers again
    while denied(await check(target(app), bearer(idp.token()))):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)


async def test_keys_found_through_oidc_discovery(start_app: Start, tmp_path: Path) -> None:
    with JwksServer() as server:
        issuer = DevIssuer(issuer=server.base_url, name="oidc")
        server.keys = issuer.jwks()
        document = config_document(tmp_path, [issuer.config(
            jwks={"discovery": True, "allow_insecure_http": True})])
        path = tmp_path / "oidc.yaml"

        fetched_before: list[int] = []  # by an attempt that lost its port, if any

        def write() -> Path:  # a fresh gRPC port each time: the last one was taken
            fetched_before.append(server.fetches)
            document["listen"] = {"grpc": f"127.0.0.1:{free_port()}", "metrics": None,
                                  "drain_timeout": "1s"}
            path.write_text(yaml.safe_dump(document))
            return path

        app = await app_on_fresh_ports(write)
        try:
            assert not denied(await check(target(app), bearer(issuer.token())))
            assert server.fetches - fetched_before[-1] == 1
        finally:
            await app.stop()


async def test_unix_socket_listener(start_app: Start, idp: DevIssuer, jwks: JwksServer,
                                    tmp_path: Path) -> None:
    uds = tmp_path / "tg.sock"
    app = await start_app(served(jwks), listen={"grpc": None, "uds": str(uds)})
    assert uds.is_socket()
    assert not denied(await check(f"unix:{uds}", bearer(idp.token())))
    await app.stop()
    assert not uds.exists()


# --- the `tenantgate serve` process: signals, metrics, logs ---------------------------------

@pytest.fixture
def process_config(tmp_path: Path, idp: DevIssuer, jwks: JwksServer) -> Path:
    return write_config(tmp_path, idp, served(jwks, refetch_interval="1s"),
                        listen={"metrics": f"127.0.0.1:{free_port()}"})


@pytest.fixture
def server(process_config: Path) -> Iterator[TenantgateProcess]:
    def attempt() -> TenantgateProcess:
        document = yaml.safe_load(process_config.read_text())
        listen = document["listen"]  # fresh ports on every attempt: the last ones were taken
        listen.update(grpc=f"127.0.0.1:{free_port()}", metrics=f"127.0.0.1:{free_port()}")
        process_config.write_text(yaml.safe_dump(document))
        return TenantgateProcess(process_config, grpc=listen["grpc"]).start()

    process = on_fresh_ports(attempt)
    yield process
    process.close()


def grpc_address(process: TenantgateProcess) -> str:
    assert process.grpc is not None
    return process.grpc


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.mark.parametrize("jwks_max_age", [3600])  # the only fetch after start is the Check's
async def test_sigterm_turns_health_not_serving_and_drains_the_inflight_check(
        server: TenantgateProcess, idp: DevIssuer, jwks: JwksServer) -> None:
    address = grpc_address(server)
    assert not denied(await check(address, bearer(idp.token())))  # keys loaded: no fetch
    # The in-flight Check: a new key id makes tenantgate refetch, and the IdP holds the answer
    # until NOT_SERVING has been seen.
    jwks.keys = idp.jwks(["k1", "k2"])
    begun = jwks.begun
    jwks.hold()
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service="envoy.service.auth.v3.Authorization"))
            assert (await watch.read()).status == SERVING
            inflight = asyncio.ensure_future(
                AuthorizationStub(channel).Check(bearer(idp.token(kid="k2")), timeout=30))
            await fetch_begun(jwks, begun + 1)  # the Check is now waiting for the JWKS
            assert server.proc is not None
            os.kill(server.proc.pid, signal.SIGTERM)
            assert (await watch.read()).status == NOT_SERVING
            assert not inflight.done()  # still held: the drain has it to answer
            jwks.release()
            response = await inflight
    finally:
        jwks.release()
    assert response.status.code == 0 and response.HasField("ok_response")
    assert server.proc.wait(timeout=10) == 0


async def test_sighup_reload_applies_a_valid_config_and_keeps_running_on_an_invalid_one(
        server: TenantgateProcess, process_config: Path, idp: DevIssuer) -> None:
    address, pid = grpc_address(server), server.pid
    assert pid is not None
    good = process_config.read_text()
    suspended = yaml.safe_load(good)
    suspended["tenants"] = {"registry": {"acme": {"status": "suspended"}}}
    process_config.write_text(yaml.safe_dump(suspended))
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while denied(await check(address, bearer(idp.token()))) != 403:
        assert time.monotonic() < deadline, "reload not applied"
        await asyncio.sleep(0.05)
    process_config.write_text(good.replace("issuers:", "isuers:"))
    os.kill(pid, signal.SIGHUP)
    wait_for(lambda: "reload rejected" in server.log_tail(5000), "rejection not logged")
    assert "isuers: unknown key (did you mean 'issuers'?)" in server.log_tail(5000)
    assert server.running
    assert denied(await check(address, bearer(idp.token()))) == 403  # still the suspended one


async def test_metrics_endpoint_exposes_the_check_counters(
        server: TenantgateProcess, process_config: Path, idp: DevIssuer) -> None:
    await check(grpc_address(server), bearer(idp.token()))
    await check(grpc_address(server), bearer(idp.token(tenant="ACME")))
    metrics_address = yaml.safe_load(process_config.read_text())["listen"]["metrics"]
    with urllib.request.urlopen(f"http://{metrics_address}/metrics", timeout=5) as page:
        text = page.read().decode()
    assert 'tenantgate_checks_total{decision="allow",reason="ok",tenant="other"} 1.0' in text
    assert ('tenantgate_checks_total{decision="deny",reason="tenant_invalid",tenant="other"} 1.0'
            in text)
    assert "tenantgate_check_duration_seconds_count" in text
    assert 'tenantgate_jwks_fetches_total{issuer="idp",result="ok"}' in text
    assert 'tenantgate_token_cache_total{result="miss"}' in text


def test_the_server_watches_its_event_loop_lag(process_config: Path,
                                              server: TenantgateProcess) -> None:
    metrics_address = yaml.safe_load(process_config.read_text())["listen"]["metrics"]
    pattern = re.compile(r"^tenantgate_event_loop_lag_seconds_count (\S+)$", re.MULTILINE)
    deadline = time.monotonic() + 10  # the watcher samples 40 times a second
    samples = 0.0
    while samples == 0 and time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://{metrics_address}/metrics", timeout=5) as page:
            found = pattern.search(page.read().decode())
        assert found is not None
        samples = float(found.group(1))
        time.sleep(0.1)
    assert samples > 0


async def test_audit_line_has_its_fields_and_no_token_or_query_appears_anywhere(
        server: TenantgateProcess, process_config: Path, idp: DevIssuer) -> None:
    token = idp.token(tenant="acme", sub="alice")
    request = check_request("/notes/1?access_token=SECRET-QUERY", "POST",
                            headers={"authorization": f"Bearer {token}"}, request_id="rid-1")
    await check(grpc_address(server), request)
    await check(grpc_address(server), check_request("/x?q=SECRET-QUERY", request_id="rid-2",
                                                    headers={"authorization": "Bearer a.b.c"}))
    audit_path = process_config.parent / "audit.log"
    wait_for(lambda: audit_path.exists() and len(audit_path.read_text().splitlines()) >= 2,
             "audit lines not written")
    lines = [json.loads(line) for line in audit_path.read_text().splitlines()]
    allow = next(line for line in lines if line["request_id"] == "rid-1")
    assert {k: allow[k] for k in ("tenant", "subject", "issuer", "key_id", "method", "path",
                                  "decision", "reason", "status")} == {
        "tenant": "acme", "subject": "alice", "issuer": "idp", "key_id": "k1",
        "method": "POST", "path": "/notes/1", "decision": "allow", "reason": "ok",
        "status": 200}
    assert isinstance(allow["ts"], float) and isinstance(allow["latency_ms"], float)
    deny = next(line for line in lines if line["request_id"] == "rid-2")
    assert (deny["decision"], deny["reason"], deny["status"]) == ("deny", "malformed_token", 401)
    everything = audit_path.read_text() + server.log_tail(100_000)
    assert "SECRET-QUERY" not in everything and token not in everything
    assert token.split(".")[2] not in everything


async def test_shutdown_delay_keeps_answering_checks_while_health_says_not_serving(
        start_app: Start, idp: DevIssuer, jwks: JwksServer) -> None:
    # gRPC's stop() refuses new calls at once; callers that have not yet seen NOT_SERVING
    # would get UNAVAILABLE (Envoy: 503). listen.shutdown_delay is their time to move away.
    app = await start_app(served(jwks), listen={"shutdown_delay": "2s"})
    address = target(app)
    stopping = asyncio.ensure_future(app.stop())
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest(service="envoy.service.auth.v3.Authorization")
            deadline = time.monotonic() + 5
            while (await health.Check(request, timeout=5)).status != NOT_SERVING:
                assert time.monotonic() < deadline, "health never said NOT_SERVING"
                await asyncio.sleep(0.02)
            response = await AuthorizationStub(channel).Check(bearer(idp.token()), timeout=5)
        assert response.status.code == 0 and response.HasField("ok_response")
        assert not stopping.done()
    finally:
        await stopping


@pytest.mark.parametrize("jwks_max_age", [3600])  # the only fetch after start is the Check's
async def test_a_check_in_flight_across_a_reload_is_answered_when_it_outlives_drain_timeout(
        start_app: Start, idp: DevIssuer, jwks: JwksServer) -> None:
    # A Check that outlives drain_timeout after a reload (a slow IdP, jwks.timeout longer than
    # drain_timeout) must not find its runtime closed under it: that answered CANCELLED or
    # INTERNAL (a closed HTTP client) instead of a decision.
    app = await start_app(served(jwks, timeout="30s"), listen={"drain_timeout": "200ms"})
    address = target(app)
    assert not denied(await check(address, bearer(idp.token())))  # keys loaded: no fetch
    old = app.runtime
    jwks.keys = idp.jwks(["k1", "k2"])  # the in-flight Check refetches: held at the IdP
    begun = jwks.begun
    jwks.hold()
    try:
        inflight = asyncio.ensure_future(check(address, bearer(idp.token(kid="k2"))))
        await fetch_begun(jwks, begun + 1)  # the Check is now waiting for the JWKS
        assert old.in_flight == 1
        path = Path(app.config_path)  # the new config needs no fetch: the reload is quick
        document = yaml.safe_load(path.read_text())
        document["issuers"] = [idp.config()]
        path.write_text(yaml.safe_dump(document))
        assert await app.reload()
        # The Check outlives drain_timeout (200 ms) five times over: the retired runtime must
        # still be open under it. Waiting longer only makes this test stricter.
        await asyncio.sleep(1.0)
        assert not old.http.is_closed and not inflight.done()
        jwks.release()
        response = await inflight
    finally:
        jwks.release()
    assert response.status.code == 0 and response.HasField("ok_response")
    deadline = time.monotonic() + 5  # and the retired runtime is closed once it is done
    while not old.http.is_closed:
        assert time.monotonic() < deadline, "retired runtime never closed"
        await asyncio.sleep(0.02)


async def test_stop_after_a_reload_that_moved_the_socket_removes_its_own_socket_only(
        start_app: Start, jwks: JwksServer, tmp_path: Path) -> None:
    import socket

    uds, other = tmp_path / "tg.sock", tmp_path / "other.sock"
    app = await start_app(served(jwks), listen={"grpc": None, "uds": str(uds)})
    with socket.socket(socket.AF_UNIX) as stranger:  # another program's socket
        stranger.bind(str(other))
        stranger.listen()
        path = Path(app.config_path)
        document = yaml.safe_load(path.read_text())
        document["listen"]["uds"] = str(other)  # needs a restart: still served on tg.sock
        path.write_text(yaml.safe_dump(document))
        assert await app.reload()
        await app.stop()
        # Before, stop() unlinked the reloaded config's path: the stranger's socket went, and
        # the one it had bound stayed behind.
        assert other.is_socket() and not uds.exists()


async def test_a_stale_socket_is_replaced_but_a_live_one_is_not_taken_over(
        start_app: Start, jwks: JwksServer, tmp_path: Path) -> None:
    import socket

    from tenantgate.app import StartupError

    uds = tmp_path / "tg.sock"
    with socket.socket(socket.AF_UNIX) as crashed:  # left behind by a process that died
        crashed.bind(str(uds))
    app = await start_app(served(jwks), listen={"grpc": None, "uds": str(uds)})
    await app.stop()
    with socket.socket(socket.AF_UNIX) as live:  # a tenantgate still serving on that path
        live.bind(str(uds))
        live.listen()
        with pytest.raises(StartupError, match="in use by another process"):
            await start_app(served(jwks), listen={"grpc": None, "uds": str(uds)})
        # Before, the live socket was unlinked and bound again: its server lost its traffic.
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(uds))


async def test_stopping_leaves_a_socket_a_successor_bound_at_the_same_path(
        start_app: Start, jwks: JwksServer, tmp_path: Path) -> None:
    """During a rolling restart the new process binds the path while the old one drains (gRPC
    closes and unlinks the old listener when the drain starts): the old one's stop() used to
    unlink the new socket at its end, and Envoy lost tenantgate."""
    import socket

    uds = tmp_path / "tg.sock"
    app = await start_app(served(jwks), listen={"grpc": None, "uds": str(uds)})
    async with grpc.aio.insecure_channel(f"unix:{uds}") as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
        await watch.read()  # an open stream: stop() drains until it ends
        stopping = asyncio.ensure_future(app.stop())
        for _ in range(1000):  # until the old listener is gone
            if not uds.exists():
                break
            await asyncio.sleep(0.01)
        with socket.socket(socket.AF_UNIX) as successor:
            successor.bind(str(uds))
            successor.listen()
            watch.cancel()
            await stopping
            assert uds.is_socket()
            with socket.socket(socket.AF_UNIX) as client:
                client.connect(str(uds))


async def test_a_busy_socket_is_not_taken_for_a_stale_one(
        start_app: Start, jwks: JwksServer, tmp_path: Path) -> None:
    """A full accept backlog refuses a Unix connect at once with EAGAIN: that is a live,
    busy server, not a stale socket to remove."""
    import socket

    from tenantgate.app import StartupError

    uds = tmp_path / "tg.sock"
    with socket.socket(socket.AF_UNIX) as busy:
        busy.bind(str(uds))
        busy.listen(0)
        waiting = []
        for _ in range(8):  # fill the backlog
            pending = socket.socket(socket.AF_UNIX)
            pending.setblocking(False)
            try:
                pending.connect(str(uds))
            except BlockingIOError:
                pending.close()
                break
            waiting.append(pending)
        try:
            with pytest.raises(StartupError, match="cannot tell whether a server listens"):
                await start_app(served(jwks), listen={"grpc": None, "uds": str(uds)})
            assert uds.is_socket()
        finally:
            for pending in waiting:
                pending.close()
