"""The config file itself: bounded, never a device, a pipe only where waiting is allowed."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from tenantgate.config.load import MAX_CONFIG_BYTES, load_config
from tenantgate.errors import ConfigError

VALID = Path(__file__).parents[1] / "fixtures" / "config" / "valid.yaml"


@pytest.fixture(autouse=True)
def _context_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TG_TEST_CONTEXT_KEY", "k" * 64)


def test_a_device_is_refused_unread() -> None:
    # Before: /dev/zero was read until memory ran out, a MemoryError traceback.
    with pytest.raises(ConfigError) as caught:
        load_config("/dev/zero")
    assert caught.value.issues == ["cannot read: not a regular file"]


def test_a_config_over_the_bound_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (MAX_CONFIG_BYTES + 1))
    with pytest.raises(ConfigError) as caught:
        load_config(big)
    assert caught.value.issues == ["cannot read: larger than 4 MiB"]


def _fifo_with_writer(tmp_path: Path, data: bytes) -> tuple[Path, threading.Thread]:
    fifo = tmp_path / "config.fifo"
    os.mkfifo(fifo)

    def write() -> None:
        with open(fifo, "wb") as pipe:
            pipe.write(data)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    return fifo, writer


def test_a_pipe_is_read_for_the_cli(tmp_path: Path) -> None:
    # check-config <(helm template ...): the generator's output arrives through a pipe.
    fifo, writer = _fifo_with_writer(tmp_path, VALID.read_bytes())
    assert load_config(fifo).context.active_key
    writer.join(5)


def test_a_reload_refuses_a_pipe_instead_of_waiting_for_a_writer(tmp_path: Path) -> None:
    # A reload runs on the event loop: opening a FIFO with no writer would stop every call.
    fifo = tmp_path / "config.fifo"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError) as caught:
        load_config(fifo, pipe_ok=False)
    assert caught.value.issues == ["cannot read: not a regular file"]
