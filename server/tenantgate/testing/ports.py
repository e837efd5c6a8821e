"""The free-port race: a port free_port() found free may be bound by another process before our
server binds it. Start-ups check that their ports are theirs and retry on fresh ports."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

ATTEMPTS = 3
# bind(2)'s EADDRINUSE as redis-server, postgres and Envoy log it ("Address already in use"),
# and as tenantgate's start-up errors put it ("cannot listen (address in use, ...)").
_IN_USE = re.compile(r"address (already )?in use", re.IGNORECASE)
_TCP_LISTEN = "0A"  # the `st` column of /proc/net/tcp


class ReservedPort:
    """A loopback port bound and never listened on, for as long as it is held: a connect to it
    is refused (ECONNREFUSED), and no other process can bind it meanwhile (a port free_port()
    gave is free for anyone). For "nothing listens there", and for a server that is to start
    there later: release() it just before that start (the server must then keep this port)."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))  # no SO_REUSEADDR: nobody shares it, even with it
        self.port: int = self._sock.getsockname()[1]

    def release(self) -> None:
        self._sock.close()

    def __enter__(self) -> ReservedPort:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def in_use(port: int) -> str:
    """The message for a port another process listens on; port_taken() recognises it."""
    return f"127.0.0.1:{port}: address already in use by another process"


def port_taken(error: BaseException) -> bool:
    """Whether a start-up failed because a port it was given was in use."""
    return bool(_IN_USE.search(str(error)))


def on_fresh_ports(start: Callable[[], T], attempts: int = ATTEMPTS) -> T:
    """`start()`, called again while it fails because a port was taken. `start` must pick its
    ports with free_port() on every call and leave nothing running when it fails."""
    for _ in range(attempts - 1):
        try:
            return start()
        except Exception as exc:
            if not port_taken(exc):
                raise
    return start()


async def on_fresh_ports_async(start: Callable[[], Awaitable[T]],
                               attempts: int = ATTEMPTS) -> T:
    """on_fresh_ports() for a server started in this process's event loop."""
    for _ in range(attempts - 1):
        try:
            return await start()
        except Exception as exc:
            if not port_taken(exc):
                raise
    return await start()


def stranger_on(pid: int, ports: Iterable[int]) -> int | None:
    """The first of `ports` a process other than `pid` listens on, if any. A readiness probe
    that connects would take such a stranger for our server. Linux only: elsewhere, None."""
    ours = _socket_inodes(pid)
    if ours is None:
        return None
    return next((port for port in ports if _listening_inodes(port) - ours), None)


def _socket_inodes(pid: int) -> set[str] | None:
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:  # no /proc (not Linux), or not ours to look at
        return None
    inodes = set()
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    return inodes


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:  # sl local_address rem_address st ... uid timeout inode
            fields = row.split()
            if fields[3] == _TCP_LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes
