"""Unix-socket listeners (listen.uds, admin.listen unix:PATH): refuse a path a live server
answers on, remove one a crashed run left behind, and at stop unlink only our own socket."""

from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path


class SocketInUse(Exception):
    """A server listens on the path, or we cannot tell that none does."""


def remove_stale_socket(path: str, setting: str) -> None:
    """Unlink a socket a crashed run left behind; refuse one a live server accepts on (gRPC
    would unlink it and bind over it, silently taking its calls from a tenantgate still
    running). `setting` names the config key in the message, e.g. `listen.uds`."""
    if not Path(path).is_socket():
        return
    with socket.socket(socket.AF_UNIX) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):  # nobody listens: stale
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as exc:  # a directory we may not write to, a read-only mount
                raise SocketInUse(f"{setting} {path}: a stale socket that cannot be removed "
                                  f"({exc.strerror or type(exc).__name__})") from None
            return
        except OSError as exc:
            # A full backlog (EAGAIN at once on Linux, or a timeout) means a busy server; a
            # socket we may not reach is not ours to remove either.
            raise SocketInUse(f"{setting} {path}: cannot tell whether a server listens on "
                              f"it ({exc.strerror or type(exc).__name__}); remove it if "
                              "it is stale") from None
    raise SocketInUse(f"{setting} {path}: a server is listening on it (in use by another "
                      "process)")


@dataclass(frozen=True, slots=True)
class BoundSocket:
    """The socket file we bound, by device and inode: a successor that binds the same path
    while we drain gets a new inode, and its socket is left alone."""

    path: str
    device: int
    inode: int

    @classmethod
    def of(cls, path: str) -> BoundSocket:
        found = os.stat(path)
        return cls(path, found.st_dev, found.st_ino)

    def unlink_if_ours(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            found = os.stat(self.path)
            if (found.st_dev, found.st_ino) == (self.device, self.inode):
                os.unlink(self.path)
