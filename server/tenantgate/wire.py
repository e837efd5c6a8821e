"""Protobuf wire encoding of the allow-path CheckResponse, by hand, because it is the hot path.

Building the same response from protobuf message objects costs several times more CPU per
Check. The bytes here are exactly what `decision.to_check_response` would serialize (a unit
test parses both and compares), using only length-delimited and varint fields:

    CheckResponse   status=1 {}, ok_response=3, dynamic_metadata=4 (Struct)
    OkHttpResponse  headers=2 (HeaderValueOption), headers_to_remove=5,
                    response_headers_to_add=6
    HeaderValueOption header=1 (HeaderValue key=1 value=2), append_action=3 (varint)
    Struct          fields=1 (map entry key=1, value=2: Value string_value=3)
"""

from __future__ import annotations

from collections.abc import Iterable

OVERWRITE_IF_EXISTS_OR_ADD = 2
STATUS_OK = b"\x0a\x00"  # field 1 (status), an empty google.rpc.Status: code OK


def varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_SMALL = 16384  # lengths below this (almost all) are looked up, not encoded
_SMALL_VARINTS = tuple(varint(i) for i in range(_SMALL))


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited field: tag, length, payload."""
    size = len(payload)
    length = _SMALL_VARINTS[size] if size < _SMALL else varint(size)
    return _SMALL_VARINTS[number << 3 | 2] + length + payload


_OVERWRITE = b"\x18" + varint(OVERWRITE_IF_EXISTS_OR_ADD)  # field 3, varint


def header_option(name: str, value: str, number: int = 2) -> bytes:
    """One HeaderValueOption (OVERWRITE_IF_EXISTS_OR_ADD) as field `number` of OkHttpResponse."""
    key, val = name.encode(), value.encode()
    if len(key) + len(val) > _SHORT_HEADER_BYTES:
        return field(number, field(1, field(1, key) + field(2, val)) + _OVERWRITE)
    # field() written out for the usual short header: this runs on every allow, and the
    # nested calls cost more than the bytes. Every length here is below _SMALL.
    small = _SMALL_VARINTS
    header_value = b"".join((b"\x0a", small[len(key)], key, b"\x12", small[len(val)], val))
    header = b"".join((b"\x0a", small[len(header_value)], header_value, _OVERWRITE))
    return b"".join((small[number << 3 | 2], small[len(header)], header))


# Name plus value up to this: each nested length stays a table lookup (< _SMALL with tags).
_SHORT_HEADER_BYTES = 16_000


def headers_to_remove(names: Iterable[str]) -> bytes:
    return b"".join(field(5, name.encode()) for name in names)


def struct_entry(key: str, value: str) -> bytes:
    """One `fields` map entry of a Struct whose value is a string."""
    return field(1, field(1, key.encode()) + field(2, field(3, value.encode())))


def allow_response(header_options: bytes, metadata: bytes) -> bytes:
    """CheckResponse bytes from pre-encoded OkHttpResponse fields and Struct fields."""
    if len(header_options) >= _SMALL or len(metadata) >= _SMALL:
        out = STATUS_OK + field(3, header_options)
        return out + field(4, metadata) if metadata else out
    small = _SMALL_VARINTS  # field() written out, as in header_option
    parts = [STATUS_OK, b"\x1a", small[len(header_options)], header_options]
    if metadata:
        parts += (b"\x22", small[len(metadata)], metadata)
    return b"".join(parts)
