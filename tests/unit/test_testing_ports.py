"""tenantgate.testing.ports: start-ups retry on fresh ports only when a port was taken, and a
port's listener is told apart from ours."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable

import pytest
from tenantgate.testing.ports import in_use, on_fresh_ports, stranger_on


def failing(*errors: Exception) -> tuple[list[int], Callable[[], str]]:
    """A start() that raises `errors` in turn, then succeeds; and the list of its calls."""
    calls: list[int] = []

    def start() -> str:
        calls.append(1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return "started"

    return calls, start


@pytest.mark.parametrize("said", [
    "bind: Address already in use",                           # redis-server, postgres, Envoy
    "listen.grpc 127.0.0.1:1: cannot listen (address in use, or no such directory, ...)",
    in_use(1),                                                # a stranger answered our probe
])
def test_a_taken_port_is_retried_on_fresh_ports(said: str) -> None:
    calls, start = failing(RuntimeError(said), RuntimeError(said))
    assert on_fresh_ports(start) == "started"
    assert len(calls) == 3


def test_retries_stop_after_the_last_attempt() -> None:
    calls, start = failing(*[RuntimeError("Address already in use")] * 3)
    with pytest.raises(RuntimeError, match="in use"):
        on_fresh_ports(start)
    assert len(calls) == 3


def test_any_other_failure_is_not_retried() -> None:
    calls, start = failing(RuntimeError("initdb failed"))
    with pytest.raises(RuntimeError, match="initdb failed"):
        on_fresh_ports(start)
    assert len(calls) == 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_listener_of_another_process_is_a_stranger() -> None:
    with socket.socket() as ours:
        ours.bind(("127.0.0.1", 0))
        ours.listen()
        port = ours.getsockname()[1]
        other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        try:
            assert stranger_on(os.getpid(), [port]) is None
            assert stranger_on(other.pid, [port]) == port
        finally:
            other.kill()
            other.wait()
