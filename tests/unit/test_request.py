"""RequestView.from_check: headers from either map, duplicates, sizes, path without query."""

from __future__ import annotations

import pytest
from tenantgate.authz import parse_check_request
from tenantgate.request import MAX_CONTENT_LENGTH, MAX_HEADER_VALUE_BYTES, RequestView
from tenantgate.testing.check import check_request


def test_fields_come_from_the_check_request() -> None:
    view = RequestView.from_check(check_request(
        "/notes/1?token=secret", "post", headers={"X-Thing": "1"}, request_id="r-1",
        host="api.example"))
    # The method as sent: pipeline.sanitize refuses one that is not upper-case.
    assert (view.method, view.path, view.host, view.request_id) == (
        "post", "/notes/1", "api.example", "r-1")
    assert view.headers.get("x-thing") == "1"


def test_request_id_is_the_x_request_id_header_before_envoys_stream_number() -> None:
    # Envoy fills CheckRequest's `id` with its internal stream number; logs and backends
    # see x-request-id (pinned with a real Envoy in tests/e2e/test_header_and_path_attacks.py).
    view = RequestView.from_check(check_request(request_id="1819530999414",
                                                headers={"x-request-id": "h-7"}))
    assert view.request_id == "h-7"


def test_request_id_falls_back_to_the_check_request_id() -> None:
    assert RequestView.from_check(check_request(request_id="r-2")).request_id == "r-2"


def test_raw_header_map_wins_and_keeps_every_copy() -> None:
    request = check_request(headers={"authorization": "from-map"},
                            raw_headers=[("Authorization", "a"), ("authorization", "b")])
    view = RequestView.from_check(request)
    assert view.headers.get("authorization") == "a,b"
    assert view.duplicated == {"authorization"}


@pytest.mark.parametrize("name", ["authorization", "content-length", "content-type", "host",
                                  ":authority"])
def test_single_valued_header_twice_is_flagged(name: str) -> None:
    view = RequestView.from_check(check_request(raw_headers=[(name, "1"), (name, "2")]))
    assert view.duplicated == {name}


def test_multi_valued_header_twice_is_not_flagged() -> None:
    view = RequestView.from_check(check_request(raw_headers=[("accept", "a"), ("accept", "b")]))
    assert view.duplicated == frozenset() and view.headers.get("accept") == "a,b"


def test_comma_in_joined_authorization_means_two_values() -> None:
    view = RequestView.from_check(check_request(headers={"authorization": "Bearer a,Bearer b"}))
    assert view.duplicated == {"authorization"}


def test_comma_in_the_host_means_two_host_headers() -> None:
    # Envoy 1.40 joins a repeated Host with "," and passes it on; a backend routing on the
    # host would see `a,b`. RFC 9112 3.2: a request with two Host headers gets 400.
    assert RequestView.from_check(check_request(host="a.example,b.example")).duplicated == \
        {"host"}
    assert RequestView.from_check(check_request(host="a.example:8080")).duplicated == \
        frozenset()


def test_authorization_joined_by_envoy_inside_the_raw_map_means_two_values() -> None:
    # Envoy 1.40 joins a repeated Authorization with "," even in the raw header map.
    request = check_request(raw_headers=[("authorization", "Bearer a,Bearer b")])
    assert RequestView.from_check(request).duplicated == {"authorization"}


def test_upper_case_names_in_the_plain_map_are_lowered() -> None:
    view = RequestView.from_check(check_request(headers={"Authorization": "Bearer x"}))
    assert view.headers.get("authorization") == "Bearer x"


def test_names_differing_only_in_case_in_the_plain_map_are_a_repeat() -> None:
    # As in the raw map: one copy used and the other silently dropped is the ambiguity
    # sanitize refuses, whichever map the sender fills.
    view = RequestView.from_check(check_request(
        headers={"Authorization": "Bearer a", "authorization": "Bearer b"}))
    assert view.duplicated == {"authorization"}
    # A protobuf map has no order: the copies are joined in whichever order it yields them.
    assert sorted((view.headers.get("authorization") or "").split(",")) == ["Bearer a", "Bearer b"]


def test_oversized_header_value_is_flagged() -> None:
    big = "x" * (MAX_HEADER_VALUE_BYTES + 1)
    assert RequestView.from_check(check_request(headers={"x-big": big})).oversized
    assert not RequestView.from_check(check_request(headers={"x-big": big[:-1]})).oversized


@pytest.mark.parametrize("extra", [0, 1])
def test_the_grpc_path_sizes_headers_from_the_wire_length(extra: int) -> None:
    # gRPC hands the servicer the message with its length (parse_check_request), which
    # from_check uses instead of measuring the message again.
    value = "x" * (MAX_HEADER_VALUE_BYTES + extra)
    data = check_request(headers={"x-big": value}).SerializeToString()
    request, size = parse_check_request(data)
    assert size == len(data) > MAX_HEADER_VALUE_BYTES
    assert RequestView.from_check(request, size).oversized == bool(extra)


@pytest.mark.parametrize("value, expected", [
    ("10", 10), ("0", 0), ("-1", None), ("1e3", None), ("", None), (" 5", None),
    ("\u00b2", None), ("\u0661\u0662", None), ("9" * 5000, MAX_CONTENT_LENGTH),
], ids=["ten", "zero", "negative", "exponent", "empty", "space", "superscript-two",
        "arabic-indic-digits", "absurdly-large"])
def test_content_length_is_parsed_strictly_and_never_raises(value: str,
                                                            expected: int | None) -> None:
    # str.isdigit() is true for "²", which int() refuses: that was a ValueError per Check.
    view = RequestView.from_check(check_request(raw_headers=[("content-length", value)]))
    assert view.content_length == expected


@pytest.mark.parametrize("size", [-1, 0, 20, 20_000])
def test_bytes_received_so_far_are_not_a_content_length(size: int) -> None:
    # Envoy fills `size` with the body bytes received when it builds the Check (seen with a
    # real Envoy 1.40: 20 for an HTTP/2 POST whose 20000-byte body was still arriving, with
    # with_request_body's partial buffering). Taken as the length, it let that body past
    # max_body_bytes instead of the 411 a body of unknown length gets.
    assert RequestView.from_check(check_request("/", "POST", size=size)).content_length is None


def test_content_length_header_is_the_length_whatever_size_says() -> None:
    view = RequestView.from_check(check_request(headers={"content-length": "7"}, size=20))
    assert view.content_length == 7
