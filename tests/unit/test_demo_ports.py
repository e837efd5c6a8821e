"""The demo's own check that its Envoy port is free."""

from __future__ import annotations

import errno
import socket

import pytest
from tenantgate.cli.demo import _port_problem


def _leave_time_wait() -> int:
    """A port whose last server closed first, as Envoy does at the end of a demo: the kernel
    keeps that connection in TIME_WAIT for a minute, and nothing listens any more."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = int(listener.getsockname()[1])
        client = socket.create_connection(("127.0.0.1", port))
        served, _ = listener.accept()
        served.close()  # the server side closes first and keeps the TIME_WAIT
        client.close()
    return port


def test_a_port_left_in_time_wait_by_the_last_demo_counts_as_free() -> None:
    assert _port_problem(_leave_time_wait()) is None


def test_a_port_something_listens_on_is_taken() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = int(listener.getsockname()[1])
        assert _port_problem(port) == "is in use (choose another with --port)"


def test_a_port_refused_for_another_reason_is_not_called_in_use(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Before: every bind error read "in use", a port below 1024 without the privilege too.
    def refuse(self: socket.socket, address: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(socket.socket, "bind", refuse)
    assert _port_problem(80) == "cannot be listened on: Permission denied"
