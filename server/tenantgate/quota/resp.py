"""RESP encoding of the one command the quota hot path sends: EVALSHA sha numkeys keys... args...

A RESP command is an array of bulk strings: `*<n>\\r\\n` then `$<len>\\r\\n<bytes>\\r\\n` per
element (the Redis protocol specification). Integers and keys repeat from request to request,
so their encodings are cached.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence


@functools.lru_cache(maxsize=4096)
def _bulk_int(value: int) -> bytes:
    text = str(value).encode()
    return b"$%d\r\n%s\r\n" % (len(text), text)


@functools.lru_cache(maxsize=16384)
def _bulk_str(value: str) -> bytes:
    data = value.encode()
    return b"$%d\r\n%s\r\n" % (len(data), data)


def evalsha(sha: bytes, keys: Sequence[str], args: Sequence[int]) -> bytes:
    head = b"*%d\r\n$7\r\nEVALSHA\r\n$%d\r\n%s\r\n" % (3 + len(keys) + len(args), len(sha), sha)
    return b"".join([head, _bulk_int(len(keys)), *map(_bulk_str, keys), *map(_bulk_int, args)])


def command(*parts: str | bytes | int) -> bytes:
    """Any command, unencoded parts and all: for the rare ones (AUTH, SELECT, SCRIPT LOAD)."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part if isinstance(part, bytes) else str(part).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)
