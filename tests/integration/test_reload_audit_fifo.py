"""A reload with audit.path a FIFO whose reader is gone (a log collector restarting) is
refused at once, keeping the running config; before, its open blocked the event loop until a
reader came back: Checks, health and SIGTERM all waited."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from tenantgate.app import App
from tenantgate.testing.check import config_document


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "audit.fifo"
    os.mkfifo(path)
    yield path


def open_reader(path: Path) -> int:
    return os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a reader, at once, writer or not


async def test_a_reload_with_a_fifo_that_has_no_reader_is_refused_at_once(
        tmp_path: Path, fifo: Path, caplog: pytest.LogCaptureFixture) -> None:
    document = config_document(tmp_path, [])
    document["audit"]["path"] = str(fifo)
    path = tmp_path / "tenantgate.yaml"
    path.write_text(yaml.safe_dump(document))
    reader = open_reader(fifo)
    app = App(str(path))  # at start-up serve waits for a reader (docs): there is one
    comeback: list[int] = []
    # Without the fix the reload's open waits for a reader, then succeeds: the assert on its
    # result fails. The reader that comes after 30 s is only there so that it cannot hang.
    later = threading.Timer(30.0, lambda: comeback.append(open_reader(fifo)))
    try:
        assert await app.reload()  # a reader: the FIFO is opened again
        os.close(reader)  # the log collector restarts
        running = app.runtime
        later.start()
        with caplog.at_level(logging.ERROR, logger="tenantgate"):
            assert await app.reload() is False
        assert app.runtime is running
        assert f"audit.path: cannot open {fifo}: a FIFO with no reader" in caplog.text
    finally:
        later.cancel()
        later.join()
        await app.stop()
        for fd in comeback:
            os.close(fd)
