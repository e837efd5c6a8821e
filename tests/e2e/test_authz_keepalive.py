"""A front Envoy drops its connection to a tenantgate that stops answering (a node gone
without a FIN or RST), instead of sending Checks into it until TCP gives up."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest
from e2e_support import EchoBackend, Stack, received, running_stack

KEEPALIVE_STAT = "cluster.tenantgate.http2.keepalive_timeout"
# Generous: the PING goes out within Envoy's 10 s interval and is given up after 2 s.
DEADLINE = 60.0


@pytest.fixture
def stack(tmp_path_factory: pytest.TempPathFactory, envoy_path: str) -> Iterator[Stack]:
    backend = EchoBackend().start()
    try:
        with running_stack(tmp_path_factory.mktemp("keepalive"), upstream=backend.address,
                           mode="front") as s:  # over TCP: listen.grpc
            yield s
    finally:
        backend.stop()


def _keepalive_timeouts(stack: Stack) -> int:
    return stack.envoy.stats(KEEPALIVE_STAT).get(KEEPALIVE_STAT, 0)


def test_a_tenantgate_that_stops_answering_loses_its_connection(stack: Stack) -> None:
    with stack.client() as client:
        received(client.get("/tenants/acme/notes", headers=stack.auth("acme")))
        pid = stack.tenantgate.pid
        assert pid is not None
        # A stopped process still has its kernel acknowledge TCP, as a half-open peer's
        # network path may: only an unanswered HTTP/2 PING shows Envoy nobody is there.
        os.kill(pid, signal.SIGSTOP)
        try:
            give_up = time.monotonic() + DEADLINE
            while _keepalive_timeouts(stack) == 0 and time.monotonic() < give_up:
                time.sleep(0.5)
        finally:
            os.kill(pid, signal.SIGCONT)
        assert _keepalive_timeouts(stack) == 1
        # The next Check opens a fresh connection to the tenantgate that is back.
        received(client.get("/tenants/acme/notes", headers=stack.auth("acme")))
