"""A listen.uds serve cannot bind fails check-config, and serve names the reason, not "address
in use, or no such directory, or not allowed". A missing directory is only a warning from
check-config: a config is checked before rollout, away from the volume the socket goes in."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
import yaml
from tenantgate.app import App, StartupError
from tenantgate.cli import main
from tenantgate.config.load import parse_config
from tenantgate.errors import ConfigError
from tenantgate.testing.check import DevIssuer, config_document

pytestmark = pytest.mark.unit


def write_config(directory: Path, uds: str) -> Path:
    document = config_document(directory, [DevIssuer().config()])
    document["listen"] = {"grpc": None, "metrics": None, "uds": uds}
    path = directory / "tenantgate.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def _missing_directory(d: Path) -> tuple[str, str]:
    return f"{d}/missing/tg.sock", f"directory {d}/missing: No such file or directory"


def _under_a_file(d: Path) -> tuple[str, str]:
    (d / "file").write_text("")
    return f"{d}/file/tg.sock", f"{d}/file is not a directory"


def _a_directory(d: Path) -> tuple[str, str]:
    (d / "tg.sock").mkdir()
    return f"{d}/tg.sock", "a directory is in the way: choose a path for the socket file itself"


def _a_regular_file(d: Path) -> tuple[str, str]:
    (d / "tg.sock").write_text("")
    return f"{d}/tg.sock", ("a file that is not a socket is in the way: remove it or choose "
                            "another path")


UNUSABLE: list[Callable[[Path], tuple[str, str]]] = [
    _missing_directory, _under_a_file, _a_directory, _a_regular_file]
IDS = ["missing-directory", "under-a-file", "a-directory", "a-regular-file"]


@pytest.mark.parametrize("make", UNUSABLE[1:], ids=IDS[1:])
def test_a_socket_path_serve_cannot_bind_fails_check_config(
        tmp_path: Path, make: Callable[[Path], tuple[str, str]],
        capsys: pytest.CaptureFixture[str]) -> None:
    uds, problem = make(tmp_path)
    config_path = write_config(tmp_path, uds)
    assert main(["check-config", str(config_path)]) == 2
    assert capsys.readouterr().err == (
        f"{config_path}: listen.uds: cannot listen on {uds}: {problem}\n")


@pytest.mark.parametrize("make", UNUSABLE, ids=IDS)
async def test_serve_names_why_it_cannot_bind_the_socket(
        tmp_path: Path, make: Callable[[Path], tuple[str, str]]) -> None:
    uds, problem = make(tmp_path)
    app = App(str(write_config(tmp_path, "tg-unused.sock")))
    app.server = grpc.aio.server()
    with pytest.raises(StartupError) as caught:
        app._bind(None, uds)
    assert str(caught.value) == f"listen.uds: cannot listen on {uds}: {problem}"


def test_a_missing_socket_directory_is_only_a_warning_from_check_config(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    uds, problem = _missing_directory(tmp_path)  # serve refuses it: the test above
    config_path = write_config(tmp_path, uds)
    assert main(["check-config", str(config_path)]) == 0
    captured = capsys.readouterr()
    assert captured.err == (f"{config_path}: warning: listen.uds: cannot listen on {uds}: "
                            f"{problem}; serve needs the directory where it runs\n")
    assert captured.out.startswith(f"{config_path}: ok")


def test_a_stale_socket_passes_check_config(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket(socket.AF_UNIX) as stale:  # bound, never listened on, closed
        stale.bind(str(tmp_path / "tg.sock"))
    config_path = write_config(tmp_path, "tg.sock")
    assert main(["check-config", str(config_path)]) == 0
    assert capsys.readouterr().err == ""


def test_a_new_socket_path_in_a_writable_directory_passes_and_is_not_created(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config_path = write_config(tmp_path, "tg.sock")
    assert main(["check-config", str(config_path)]) == 0, capsys.readouterr().err
    assert not (tmp_path / "tg.sock").exists()


def test_a_socket_path_longer_than_sun_path_is_refused(tmp_path: Path) -> None:
    uds = "/run/" + "s" * 98 + ".sock"  # 108 bytes
    text = yaml.safe_dump(config_document(tmp_path, [DevIssuer().config()])
                          | {"listen": {"grpc": None, "uds": uds}})
    with pytest.raises(ConfigError) as caught:
        parse_config(text, base_dir=tmp_path)
    assert caught.value.issues == [
        f"listen.uds: {uds} is 108 bytes: a Unix socket path holds at most 107 (sun_path); "
        "choose a shorter one"]
    parse_config(text.replace("s" * 98, "s" * 97), base_dir=tmp_path)  # 107 bytes: fine
