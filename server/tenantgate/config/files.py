"""Files the config names: where a relative path points, and reading one bounded, never a
device, a FIFO (except for a command) or a directory."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from pydantic import ValidationInfo

# A secret is a key or a token, a few hundred bytes: a larger file is a wrong path (a log, an
# image, /dev/zero), and reading it whole could exhaust memory.
SECRET_FILE_MAX_BYTES = 64 * 1024
# A JWKS document, from a file or fetched: what the key set reads and check-config checks.
MAX_JWKS_BYTES = 512 * 1024


class UnfitFile(ValueError):
    """Not a regular file, or larger than the bound: str() says which, in a few words."""

    def __init__(self, reason: str, *, too_large: bool = False) -> None:
        super().__init__(reason)
        self.too_large = too_large


def read_regular_file(path: Path, limit: int) -> bytes:
    """A regular file's bytes, at most `limit` of them; UnfitFile, or OSError as raised."""
    # A device, FIFO or directory: /dev/zero never ends, a FIFO waits for a writer, opening a
    # device may act. Looked at before opening, so none is opened, and again on the descriptor:
    # a reload runs on the event loop, and a FIFO swapped in meanwhile would block the server
    # (O_NONBLOCK; it changes nothing for a regular file). Symlinks are followed: a Kubernetes
    # volume mounts its files through them.
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise UnfitFile("not a regular file")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnfitFile("not a regular file")
        with open(fd, "rb", closefd=False) as file:
            data = b"" if info.st_size > limit else file.read(limit + 1)
    finally:
        os.close(fd)
    if info.st_size > limit or len(data) > limit:
        raise UnfitFile(f"larger than {limit} bytes", too_large=True)
    return data


def read_pipe(path: Path, limit: int) -> bytes:
    """A pipe's or FIFO's bytes, at most `limit` of them: waits for its writer, so only for a
    command, never on the event loop. UnfitFile when larger, or OSError as raised."""
    with path.open("rb") as pipe:
        data = pipe.read(limit + 1)
    if len(data) > limit:
        raise UnfitFile(f"larger than {limit} bytes", too_large=True)
    return data


def read_small_file(path: Path, limit: int, too_large: str) -> bytes:
    """read_regular_file for the config: ValueError naming the path and why."""
    try:
        return read_regular_file(path, limit)
    except UnfitFile as exc:
        if exc.too_large:
            raise _larger_than(path, limit, too_large) from None
        raise ValueError(f"{path} is {exc}") from None
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None


def read_file_or_pipe(path: Path, limit: int, too_large: str) -> bytes:
    """For a command's file option, never the server: a regular file as read_small_file reads
    it, or a pipe or FIFO (`<(vault read ...)`, /dev/stdin), bounded too; ValueError naming the
    path and why. A pipe keeps a secret off disk; a command may wait for its writer (a server
    reload may not). Never a device or a directory: /dev/zero, read whole, exhausted memory."""
    try:
        mode = os.stat(path).st_mode
        if stat.S_ISREG(mode):
            return read_small_file(path, limit, too_large)
        if not stat.S_ISFIFO(mode):
            raise ValueError(f"{path} is not a regular file or a pipe")
        return read_pipe(path, limit)
    except UnfitFile:  # read_pipe's only one; read_small_file raises a plain ValueError
        raise _larger_than(path, limit, too_large) from None
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None


def _larger_than(path: Path, limit: int, too_large: str) -> ValueError:
    return ValueError(f"{path} is larger than {limit // 1024} KiB: {too_large}")


def read_jwks_file(path: Path) -> dict[str, Any]:
    """A `jwks.file`'s document: check-config and every key-set refresh read it this way.
    ValueError naming the path and why it cannot serve as a key set."""
    data = read_small_file(path, MAX_JWKS_BYTES, "not a JWKS document")
    try:
        document = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise ValueError(f"{path} is not a JWKS document (not UTF-8 JSON)") from None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        # A file being rewritten by an IdP or sidecar must not empty the key set.
        raise ValueError(f"{path} is not a JWKS document (an object with a keys list)")
    return document


def config_file_path(value: str, info: ValidationInfo) -> str:
    """A file path from the config: relative to the config file's directory, not to wherever
    serve runs. A NUL byte, which no file name holds, is refused here: os calls raise
    ValueError for it, a traceback at serve."""
    if "\x00" in value:
        raise ValueError("a NUL byte cannot be part of a file name")
    if Path(value).is_absolute():
        return value
    return str(Path((info.context or {}).get("base_dir", ".")) / value)
