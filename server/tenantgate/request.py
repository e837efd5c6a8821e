"""RequestView.from_check: the only reader of Envoy's CheckRequest messages."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from envoy.service.auth.v3.external_auth_pb2 import CheckRequest

# Headers that must appear at most once: a second copy is ambiguity an attacker could exploit.
SINGLE_VALUED = ("authorization", "content-length", "content-type", "host", ":authority")
MAX_HEADER_VALUE_BYTES = 16 * 1024
MAX_CONTENT_LENGTH = 2**63 - 1
_NONE: frozenset[str] = frozenset()


# Not frozen: a frozen dataclass pays object.__setattr__ per field on every Check. Nothing
# writes to a view after from_check; stages read it and set fields on CheckState instead.
@dataclass(slots=True)
class RequestView:
    request_id: str
    method: str
    path: str  # without the query string
    host: str
    # Lower-case names, one value each (duplicates joined by ","). Usually Envoy's own header
    # map, read in place: a Check looks up a handful of names, so building a dict of every
    # header would cost more than the lookups.
    headers: Mapping[str, str]
    # headers["authorization"], read once: each read out of Envoy's map builds a new string,
    # and a bearer token is the longest header of almost every Check.
    authorization: str | None
    duplicated: frozenset[str]  # single-valued headers that arrived more than once
    underscored: bool  # some header name has a "_" (see pipeline.sanitize)
    oversized: bool
    content_length: int | None

    @classmethod
    def from_check(cls, request: CheckRequest, size: int | None = None) -> RequestView:
        """`size`: the serialized request's length when the caller knows it (the gRPC path
        does, for free); computing it here walks the whole message."""
        http = request.attributes.request.http
        headers, duplicated, names = _headers(http)
        authorization = headers.get("authorization")
        length_text = headers.get("content-length")
        # Only the header: Envoy's `http.size` is the body bytes received so far (a partial
        # buffer, or what arrived while an earlier filter paused), not the request's length.
        content_length = _content_length(length_text) if length_text else None
        return cls(
            # Not http.id first: Envoy fills it with its internal stream number, which no
            # access log or backend shows; x-request-id is what joins their lines to ours.
            request_id=headers.get("x-request-id") or http.id,
            # As sent: methods are case-sensitive (RFC 9110 9.1), and pipeline.sanitize refuses
            # one that is not upper-case, so rules, descriptors and the backend see one string.
            method=http.method,
            path=http.path.split("?", 1)[0],
            host=(host := http.host),
            headers=headers,
            authorization=authorization,
            duplicated=_joined_repeats(duplicated, authorization, host),
            underscored="_" in names,
            # No value can be longer than the whole message: only a big one needs the scan.
            oversized=(request.ByteSize() if size is None else size) > MAX_HEADER_VALUE_BYTES
            and max(map(len, headers.values()), default=0) > MAX_HEADER_VALUE_BYTES,
            content_length=content_length,
        )


def _joined_repeats(duplicated: frozenset[str], authorization: str | None,
                    host: str) -> frozenset[str]:
    """A comma is the trace of a repeat Envoy joined (in both maps): JWTs and our API keys
    never contain one, nor does a host, so a comma in either means two values (RFC 9112 3.2:
    a request with two Host headers gets 400; a backend routing on it would see `a,b`)."""
    if authorization is not None and "," in authorization:
        duplicated |= _AUTHORIZATION_REPEATED
    if "," in host:
        duplicated |= _HOST_REPEATED
    return duplicated


def _content_length(text: str) -> int | None:
    # ASCII digits only: str.isdigit() is also true for "²", which int() refuses. A length
    # too long to parse is larger than any body limit, not "unknown" (that would fail open).
    if not (text.isascii() and text.isdigit()):
        return None
    return int(text) if len(text) <= 18 else MAX_CONTENT_LENGTH


def _headers(http: Any) -> tuple[Mapping[str, str], frozenset[str], str]:
    """Headers from the raw header_map when Envoy sends it (encode_raw_headers), else the map;
    the single-valued names that came as separate copies (a comma in Authorization, the other
    trace of a repeat, is from_check's to see); and every name joined, for cheap scans.

    A client may repeat a header; Envoy 1.40 joins the copies with "," in both maps (seen with
    a real Envoy), other senders may list each copy in the raw map: both count as a repeat.
    """
    # http: an AttributeContext.HttpRequest (no type stubs). HasField first: reaching into an
    # absent header_map builds two empty wrappers, which costs twice as much as asking.
    if http.HasField("header_map") and len(raw := http.header_map.headers):
        return _merged((entry.key, entry.raw_value.decode("utf-8", "replace")
                        if entry.raw_value else entry.value) for entry in raw)
    plain: Mapping[str, str] = http.headers
    names = "".join(plain)  # each name read out of the map once per Check
    # Envoy sends lower-case names; other senders might not, and then `Authorization` and
    # `authorization` are two copies, not one to drop. (Not islower(): it asks Unicode's
    # tables about every character; lower() has an ASCII fast path.)
    if names != names.lower():
        return _merged(plain.items())
    return plain, _NONE, names


def _merged(entries: Iterable[tuple[str, str]]
            ) -> tuple[Mapping[str, str], frozenset[str], str]:
    duplicated: set[str] = set()
    headers: dict[str, str] = {}
    for key, value in entries:
        name = key.lower()
        if name in headers:
            if name in SINGLE_VALUED:
                duplicated.add(name)
            headers[name] = f"{headers[name]},{value}"
        else:
            headers[name] = value
    return headers, frozenset(duplicated), "".join(headers)


_AUTHORIZATION_REPEATED = frozenset({"authorization"})
_HOST_REPEATED = frozenset({"host"})
