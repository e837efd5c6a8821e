"""`tenantgate demo` turns a config it cannot use into its `[failed]` line, and keeps its Unix
socket path short whatever TMPDIR is."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from tenantgate.cli.demo import _Failed, _socket_path, _start_envoy, _start_tenantgate, _Started
from tenantgate.config.addresses import SOCKET_PATH_MAX_BYTES


def write_config(directory: Path, listen: dict[str, str]) -> Path:
    (directory / "ctx.key").write_text("k" * 64)
    path = directory / "tenantgate.yaml"
    path.write_text(yaml.safe_dump({
        "listen": listen,
        "context": {"active_key": "k1", "keys": [{"id": "k1", "secret": {"fromFile": "ctx.key"}}]},
    }))
    return path


def test_a_config_tenantgate_refuses_is_a_failed_step(tmp_path: Path) -> None:
    # Before: the ConfigError went up through the demo as a traceback.
    config = write_config(tmp_path, {"grpc": "127.0.0.1:9001",
                                     "uds": str(tmp_path / ("s" * 120) / "authz.sock")})
    with _Started() as started, pytest.raises(_Failed) as failed:
        _start_tenantgate(started, config, tmp_path)
    assert str(failed.value).startswith("tenantgate: listen.uds: ")
    assert "a Unix socket path holds at most 107" in str(failed.value)


def test_a_bootstrap_envoy_config_refuses_is_a_failed_step(tmp_path: Path) -> None:
    pytest.importorskip("envoy_data_plane")
    config = write_config(tmp_path, {"grpc": "0.0.0.0:9001"})  # no socket, no address to dial
    with _Started() as started, pytest.raises(_Failed) as failed:
        _start_envoy(started, config, 8080, "127.0.0.1:8000")
    assert str(failed.value).startswith("envoy: listen.grpc 0.0.0.0:9001 listens on every "
                                        "address")


def test_the_socket_stays_in_a_short_work_directory(tmp_path: Path) -> None:
    with _Started() as started:
        assert _socket_path(started, tmp_path) == tmp_path / "authz.sock"


def test_a_long_tmpdir_puts_the_socket_in_a_short_private_directory(tmp_path: Path) -> None:
    workdir = tmp_path / ("d" * 100)
    with _Started() as started:
        socket_path = _socket_path(started, workdir)
        assert len(os.fsencode(socket_path)) <= SOCKET_PATH_MAX_BYTES
        assert socket_path.parent.parent == Path("/tmp")
        assert socket_path.parent.stat().st_mode & 0o777 == 0o700
    assert not socket_path.parent.exists(), "removed with everything else the demo made"
