"""A socket's reads under one deadline for a whole request, shared by the two small HTTP servers
(the reference backend's and the metrics listener). Stands alone: backend/ and observe/ may
import nothing else of each other's or of tenantgate's."""

from __future__ import annotations

import io
import socket
import time
from typing import Any


class DeadlineReader(io.RawIOBase):
    """A socket's reads, each given only what is left until `deadline` when one is set; a
    TimeoutError past it. A timeout on each read alone let a client that sent a byte within
    each one hold its thread for ever."""

    def __init__(self, sock: socket.socket, deadline: float | None = None) -> None:
        self._sock = sock
        self.deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("request not received in time")
            self._sock.settimeout(left)
        return self._sock.recv_into(buffer)
