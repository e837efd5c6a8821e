"""The Unix-socket guard the Check and admin listeners share (tenantgate.unix_socket): which
socket files it removes, which it refuses, and which one stop() may unlink."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from tenantgate.config.addresses import grpc_unix_path
from tenantgate.unix_socket import BoundSocket, SocketInUse, remove_stale_socket


def test_a_socket_nobody_listens_on_is_removed(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX) as crashed:
        crashed.bind(str(path))
    remove_stale_socket(str(path), "admin.listen")
    assert not path.exists()


def test_a_socket_a_server_listens_on_is_refused_and_left(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX) as live:
        live.bind(str(path))
        live.listen()
        with pytest.raises(SocketInUse) as refused:
            remove_stale_socket(str(path), "admin.listen")
        assert str(refused.value) == (f"admin.listen {path}: a server is listening on it (in "
                                      "use by another process)")
        assert path.is_socket()


def test_a_stale_socket_that_cannot_be_removed_is_a_clear_refusal(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A read-only mount or a directory we may not write to: a traceback at start-up, before.
    path = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX) as crashed:
        crashed.bind(str(path))

    def refuse(target: str) -> None:
        raise PermissionError(13, "Permission denied", target)
    monkeypatch.setattr("tenantgate.unix_socket.os.unlink", refuse)
    with pytest.raises(SocketInUse) as refused:
        remove_stale_socket(str(path), "listen.uds")
    assert str(refused.value) == (f"listen.uds {path}: a stale socket that cannot be removed "
                                  "(Permission denied)")


def test_a_path_that_is_no_socket_is_left_to_grpc(tmp_path: Path) -> None:
    path = tmp_path / "not-a-socket"
    path.write_text("data")
    remove_stale_socket(str(path), "admin.listen")  # gRPC then fails to bind: "cannot listen"
    assert path.read_text() == "data"


def test_stop_unlinks_our_socket_but_not_a_successors_at_the_same_path(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX) as ours:
        ours.bind(str(path))
        bound = BoundSocket.of(str(path))
    path.rename(tmp_path / "old.sock")  # kept, so its inode is not reused at once
    with socket.socket(socket.AF_UNIX) as successor:
        successor.bind(str(path))  # another inode at the same path
        bound.unlink_if_ours()
        assert path.is_socket()
        BoundSocket.of(str(path)).unlink_if_ours()
        assert not path.exists()
    bound.unlink_if_ours()  # gone already: nothing to do


@pytest.mark.parametrize(("address", "path"), [
    pytest.param("unix:admin.sock", "admin.sock", id="relative"),
    pytest.param("unix:/run/tg/admin.sock", "/run/tg/admin.sock", id="absolute"),
    pytest.param("unix:///run/tg/admin.sock", "/run/tg/admin.sock", id="url-form"),
    pytest.param("unix-abstract:admin", None, id="abstract-has-no-file"),
    pytest.param("127.0.0.1:9002", None, id="tcp"),
])
def test_the_socket_file_of_a_grpc_address(address: str, path: str | None) -> None:
    assert grpc_unix_path(address) == path
