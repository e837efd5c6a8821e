"""App.reload and App.stop in-process: a reload that fails in any way keeps the running
runtime and is logged and counted; stop closes the runtimes reloads retired."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY
from tenantgate.app import App
from tenantgate.runtime import Runtime
from tenantgate.testing.check import DevIssuer, config_document, context_key_file


def write_config(directory: Path, **listen: Any) -> Path:
    document = config_document(directory, [])
    # Long enough that only stop() can close a retired runtime within the test.
    document["listen"].update({"drain_timeout": "1h", **listen})
    path = directory / "tenantgate.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def rejected() -> float:
    return REGISTRY.get_sample_value("tenantgate_config_reloads_total",
                                     {"result": "rejected"}) or 0.0


def internal_errors() -> float:
    return REGISTRY.get_sample_value("tenantgate_internal_errors_total") or 0.0


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[App]:
    app = App(str(write_config(tmp_path)))  # never started: no listener is needed here
    yield app
    await app.stop()


async def test_stop_closes_the_runtime_a_reload_retired(app: App) -> None:
    old = app.runtime.pin()  # a call in flight on the old runtime
    assert await app.reload()
    await asyncio.sleep(0.1)
    assert app.runtime is not old and not old.http.is_closed  # that call still uses it
    await app.stop()
    # Before, stop() cancelled the wait and the retired runtime was never closed.
    assert old.http.is_closed and app.runtime.http.is_closed
    old.unpin()


async def test_a_retired_runtime_is_closed_when_its_last_call_ends(app: App) -> None:
    old = app.current().pin()  # what a Check or an admin call does as it starts
    assert await app.reload()
    assert app.current() is not old  # new calls take the new runtime
    await asyncio.sleep(0.1)
    assert not old.http.is_closed  # the call in flight keeps its snapshot
    old.unpin()
    deadline = time.monotonic() + 30  # not drain_timeout (1 h here) later; only a bound
    while not old.http.is_closed:
        assert time.monotonic() < deadline, "retired runtime not closed after its last call"
        await asyncio.sleep(0.01)


async def test_a_reload_failing_outside_config_validation_keeps_the_running_runtime(
        app: App, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    def refuse(config: object, **_: object) -> Runtime:
        raise ValueError("Port could not be cast to integer value")

    running, before, errors = app.runtime, rejected(), internal_errors()
    monkeypatch.setattr(Runtime, "build", staticmethod(refuse))
    with caplog.at_level(logging.ERROR, logger="tenantgate"):
        assert await app.reload() is False
    assert app.runtime is running
    assert rejected() == before + 1
    assert internal_errors() == errors + 1  # validation let it through: a bug, alerted on
    [record] = [r for r in caplog.records if "reload rejected" in r.getMessage()]
    assert record.exc_info is not None and "Port could not be cast" in caplog.text


async def test_a_runtime_that_fails_to_start_is_closed_and_not_used(
        app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[Runtime] = []
    build = Runtime.build

    def keep(config: Any, **replacing: Any) -> Runtime:
        built.append(build(config, **replacing))
        return built[-1]

    async def fail(self: Runtime) -> None:
        raise RuntimeError("start failed")

    running, before, errors = app.runtime, rejected(), internal_errors()
    monkeypatch.setattr(Runtime, "build", staticmethod(keep))
    monkeypatch.setattr(Runtime, "start", fail)
    assert await app.reload() is False
    assert app.runtime is running and built[0].http.is_closed
    assert rejected() == before + 1
    assert internal_errors() == errors + 1  # start() degrades: raising is a bug


async def test_a_retired_runtime_failing_to_close_is_an_internal_error(app: App) -> None:
    old = app.runtime
    close = old.close

    async def fail() -> None:
        raise RuntimeError("close failed")

    old.close = fail  # type: ignore[method-assign]
    errors = internal_errors()
    assert await app.reload()
    await asyncio.gather(*app._retired)
    assert internal_errors() == errors + 1
    await close()


async def test_an_invalid_config_is_logged_without_a_traceback(
        app: App, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = Path(app.config_path)
    path.write_text(path.read_text().replace("issuers:", "isuers:"))
    running, before, errors = app.runtime, rejected(), internal_errors()
    with caplog.at_level(logging.ERROR, logger="tenantgate"):
        assert await app.reload() is False
    assert app.runtime is running and rejected() == before + 1
    assert internal_errors() == errors  # the operator's mistake, not a bug
    [record] = [r for r in caplog.records if "reload rejected" in r.getMessage()]
    assert record.exc_info is None and "isuers: unknown key" in record.getMessage()


def last_reload_successful() -> float | None:
    return REGISTRY.get_sample_value("tenantgate_config_last_reload_successful")


async def test_a_rejected_reload_shows_until_a_reload_succeeds(app: App) -> None:
    # TenantgateConfigReloadRejected holds on this: the config on disk is not the one running.
    assert last_reload_successful() == 1.0
    path = Path(app.config_path)
    good = path.read_text()
    path.write_text(good.replace("issuers:", "isuers:"))
    assert await app.reload() is False
    assert last_reload_successful() == 0.0
    assert await app.reload() is False
    assert last_reload_successful() == 0.0
    path.write_text(good)
    assert await app.reload()
    assert last_reload_successful() == 1.0


async def test_a_jwks_file_being_rewritten_is_a_warning_at_start_and_reload(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # An IdP or a sidecar rewriting the file in place: missing, then half-written. The key
    # set fetches it again until it reads; before, serve would not start (exit 2) and the
    # reload was rejected. check-config stays strict: test_config_bad_input.
    jwks = tmp_path / "jwks.json"
    document = config_document(tmp_path, [DevIssuer().config(jwks={"file": "jwks.json"})])
    path = tmp_path / "tenantgate.yaml"
    path.write_text(yaml.safe_dump(document))
    with caplog.at_level(logging.WARNING, logger="tenantgate.config"):
        app = App(str(path))
        try:
            jwks.write_text('{"keys": [')
            assert await app.reload()
        finally:
            await app.stop()
    retry = " (its keys are fetched again until it can be read)"
    assert [r.getMessage() for r in caplog.records if r.name == "tenantgate.config"] == [
        f"issuers[0].jwks.file: cannot read {jwks}: No such file or directory{retry}",
        f"issuers[0].jwks.file: {jwks} is not a JWKS document (not UTF-8 JSON){retry}"]


def write_registry(path: Path, tenant: str) -> None:
    document = yaml.safe_load(path.read_text())
    document["tenants"] = {"registry": {tenant: {}}}
    path.write_text(yaml.safe_dump(document))


async def test_a_second_sighup_during_a_slow_reload_ends_on_the_newest_config(
        app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    start = Runtime.start

    async def slow_for_acme(self: Runtime) -> None:  # e.g. a JWKS fetch from a slow IdP
        if "acme" in self.config.tenants.registry:
            await asyncio.sleep(0.5)
        await start(self)

    monkeypatch.setattr(Runtime, "start", slow_for_acme)
    path = Path(app.config_path)
    write_registry(path, "acme")
    first = asyncio.ensure_future(app.reload())
    await asyncio.sleep(0.1)
    write_registry(path, "globex")  # the operator fixes the file and sends SIGHUP again
    second = asyncio.ensure_future(app.reload())
    assert await asyncio.gather(first, second) == [True, True]
    # Before, the slow first reload finished last and swapped the older file back in.
    assert list(app.runtime.config.tenants.registry) == ["globex"]


async def test_a_reload_after_stop_is_refused(app: App) -> None:
    await app.stop()
    running = app.runtime
    assert await app.reload() is False
    assert app.runtime is running


async def test_a_reload_that_changes_the_admin_api_says_it_needs_a_restart(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    token = tmp_path / "admin.token"
    token.write_text("a" * 32)
    (tmp_path / "hash.key").write_text("h" * 32)
    path = write_config(tmp_path)
    document = yaml.safe_load(path.read_text())
    document["api_keys"] = {"hash_secret": {"fromFile": "hash.key"},
                            "redis_url": "redis://127.0.0.1:1/0"}
    document["admin"] = {"listen": "127.0.0.1:1", "token": {"fromFile": "admin.token"}}
    path.write_text(yaml.safe_dump(document))
    app = App(str(path))
    try:
        token.write_text("b" * 32)  # the operator rotates the admin token and sends SIGHUP
        with caplog.at_level(logging.WARNING, logger="tenantgate"):
            assert await app.reload()
        # Before, nothing said that the old token stays valid until the next restart.
        assert "admin settings changed; they take effect at the next restart" in caplog.text
    finally:
        await app.stop()


def signing_key_ids() -> dict[str, float]:
    """tenantgate_context_signing_key_info's series: key id -> value."""
    return {sample.labels["key_id"]: sample.value
            for family in REGISTRY.collect() if family.name == "tenantgate_context_signing_key"
            for sample in family.samples}


async def test_the_signing_key_in_use_is_exported_and_follows_a_reload(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    app = App(str(path))
    try:
        assert signing_key_ids() == {"c1": 1.0}
        # A rotation's activation step: c2 is added and made active, c1 kept for verifiers.
        document = yaml.safe_load(path.read_text())
        document["context"]["keys"].append(
            {"id": "c2", "secret": {"fromFile": context_key_file(tmp_path, "c2.key")}})
        document["context"]["active_key"] = "c2"
        path.write_text(yaml.safe_dump(document))
        assert await app.reload()
        # One series, the new id: the old one must be gone for "no replica signs with c1".
        assert signing_key_ids() == {"c2": 1.0}
    finally:
        await app.stop()
