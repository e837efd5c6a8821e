"""The App's TLS re-read: a bug in reading one listener's files is said once a minute for each
listener, so a failing listen.tls read cannot hide a failing admin.tls one; every failed read
is counted by listener."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from prometheus_client import REGISTRY
from tenantgate.app import App
from tenantgate.observe import throttle
from tenantgate.testing.check import config_document


def reread_failures(listener: str) -> float:
    return REGISTRY.get_sample_value("tenantgate_tls_reread_failures_total",
                                     {"listener": listener}) or 0.0


class BrokenRead:
    """A listener's RotatingCredentials whose reread meets a bug every time."""

    def __init__(self, at: str) -> None:
        self.at = at

    def reread(self) -> bool:
        raise RuntimeError(f"a bug in reading {self.at}'s files")


async def test_each_listeners_failing_reread_is_logged_every_minute(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "tenantgate.yaml"
    path.write_text(yaml.safe_dump(config_document(tmp_path, [])))
    app = App(str(path))
    now = 0.0
    monkeypatch.setattr(throttle, "time", SimpleNamespace(monotonic=lambda: now))
    # As _start() lists them: listen.tls first, then admin.tls.
    monkeypatch.setattr(app, "_rotating", [BrokenRead("listen.tls"), BrokenRead("admin.tls")])
    said: list[tuple[float, str]] = []
    try:
        with caplog.at_level(logging.ERROR, logger="tenantgate"):
            for minute in range(4):
                for second in (0, 20, 40):  # the 60 s read, then SIGHUPs within the minute
                    now = minute * 60.0 + second
                    caplog.clear()
                    await app._reread_tls()
                    said += [(now, str(record.args[0])) for record in caplog.records
                             if record.exc_info and "files again failed" in record.getMessage()]
    finally:
        await app.runtime.close()
    assert said == [(minute * 60.0, at) for minute in range(4)
                    for at in ("listen.tls", "admin.tls")]


class UnusableSet:
    """A listener's RotatingCredentials whose files are there but unusable (reread said so)."""

    def __init__(self, at: str) -> None:
        self.at, self.failed = at, False

    def reread(self) -> bool:
        self.failed = True
        return False


@pytest.mark.parametrize("reading", [BrokenRead, UnusableSet], ids=["bug", "unusable-set"])
async def test_each_failed_reread_is_counted_by_listener(
        tmp_path: Path, reading: type[BrokenRead | UnusableSet]) -> None:
    # TenantgateTlsRereadFailing: the served certificate is kept, and expires unrenewed.
    path = tmp_path / "tenantgate.yaml"
    path.write_text(yaml.safe_dump(config_document(tmp_path, [])))
    app = App(str(path))
    app._rotating = [reading("listen.tls"), reading("admin.tls")]  # type: ignore[list-item]
    before = {listener: reread_failures(listener) for listener in ("grpc", "admin")}
    try:
        await app._reread_tls()
        await app._reread_tls()
    finally:
        await app.runtime.close()
    assert {listener: reread_failures(listener) - count
            for listener, count in before.items()} == {"grpc": 2, "admin": 2}
