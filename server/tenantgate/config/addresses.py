"""Where tenantgate's own servers listen and what they connect to: host:port, gRPC `unix:`
addresses and Unix socket paths, checked at load rather than as a bind failure at serve. (The
addresses in Envoy's bootstrap are config/envoy/addresses.py's.)"""

from __future__ import annotations

import os
import re
import stat

# [0-9], not \d: \d matches any Unicode digit, which int() reads (full-width `009` is port 9) and
# gRPC refuses.
_HOST_PORT = re.compile(r"\[?[\w.:-]*\]?:([0-9]{1,5})")


def check_host_port(value: str) -> str:
    """`host:port` with a port that exists (0 asks the system for a free one)."""
    match = _HOST_PORT.fullmatch(value)
    if match is None or int(match.group(1)) > 65535:
        raise ValueError("must be host:port with a port up to 65535, e.g. 127.0.0.1:9001")
    return value


# A Unix socket's path goes in sun_path: 108 bytes on Linux, one of them the closing NUL.
SOCKET_PATH_MAX_BYTES = 107


def check_socket_path_length(path: str) -> str:
    """A socket path the kernel can hold; gRPC only says it could not bind."""
    if (size := len(os.fsencode(path))) > SOCKET_PATH_MAX_BYTES:
        raise ValueError(f"{path} is {size} bytes: a Unix socket path holds at most "
                         f"{SOCKET_PATH_MAX_BYTES} (sun_path); choose a shorter one")
    return path


def socket_path_problem(path: str) -> str | None:
    """Why binding a Unix socket at `path` would fail, found without binding, or None. A
    socket already there is unix_socket.remove_stale_socket's to judge: stale or in use."""
    directory = os.path.dirname(path) or "."
    try:
        if not stat.S_ISDIR(os.stat(directory).st_mode):
            return f"{directory} is not a directory"
    except OSError as exc:  # missing, not searchable, a loop
        return f"directory {directory}: {exc.strerror}"
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return _socket_create_problem(directory)
    except OSError as exc:
        return exc.strerror
    if stat.S_ISDIR(mode):
        return "a directory is in the way: choose a path for the socket file itself"
    if not stat.S_ISSOCK(mode):  # gRPC does not remove it, and bind says "address in use"
        return "a file that is not a socket is in the way: remove it or choose another path"
    return None


def socket_directory_missing(path: str) -> bool:
    """Whether the directory a socket at `path` would be created in does not exist (yet: a
    config is checked before rollout, where the pod's volume is not mounted)."""
    try:
        os.stat(os.path.dirname(path) or ".")
    except FileNotFoundError:
        return True
    except OSError:  # not searchable, a loop: socket_path_problem says so
        return False
    return False


def _socket_create_problem(directory: str) -> str | None:
    try:
        if os.statvfs(directory).f_flag & os.ST_RDONLY:
            return f"directory {directory} is on a read-only file system"
    except OSError as exc:
        return f"directory {directory}: {exc.strerror}"
    effective = os.access in os.supports_effective_ids
    if not os.access(directory, os.W_OK | os.X_OK, effective_ids=effective):
        return f"directory {directory}: permission denied (cannot create the socket)"
    return None


def check_grpc_host_given(address: str) -> str:
    """gRPC refuses to bind an empty host (`:9001`), which Prometheus' server reads as every
    IPv4 address: said at load, not as serve's bind failure."""
    if address.rpartition(":")[0] in ("", "[]"):
        raise ValueError(f"{address!r}: give a host (0.0.0.0 for every IPv4 address, [::] for "
                         "every address): gRPC cannot listen on an empty one")
    return address


def check_unix_url_absolute(address: str, relative: str) -> str:
    """gRPC reads `unix://run/a.sock` as /run/a.sock (`run` its authority), not the relative path
    it looks like: `unix://` must be followed by an absolute path. `relative` says what unix:PATH
    is relative to, in the message."""
    if address.startswith("unix://") and not address.startswith("unix:///"):
        raise ValueError(f"{address}: unix:// is followed by an absolute path (unix:///abs/"
                         f"path); write unix:PATH for {relative}")
    return address


def grpc_unix_path(address: str) -> str | None:
    """The file of a gRPC `unix:PATH` or `unix:///abs/path` address, else None (TCP, or an
    abstract socket, which has no file)."""
    if address.startswith("unix://"):
        return address[len("unix://"):]
    if address.startswith("unix:"):
        return address[len("unix:"):]
    return None
