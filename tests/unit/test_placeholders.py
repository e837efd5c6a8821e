"""One rule for what in a route or endpoint pattern is a placeholder, shared by policy and quota."""

from __future__ import annotations

import pytest
from tenantgate.config.model import PolicyConfig
from tenantgate.config.paths import is_placeholder
from tenantgate.policy import compile_routes
from tenantgate.quota.paths import Wildcard, compile_path

SEGMENTS = [
    pytest.param("*", True, id="star"),
    pytest.param("**", True, id="double-star"),
    pytest.param("{tenant}", True, id="tenant"),
    pytest.param("{id}", True, id="named"),
    pytest.param("{}", True, id="empty-braces"),
    pytest.param("items", False, id="literal"),
    pytest.param("{a", False, id="open-brace-only"),
    pytest.param("a}", False, id="close-brace-only"),
    pytest.param("a*", False, id="star-inside-a-literal"),
    pytest.param("", False, id="empty"),
]


@pytest.mark.parametrize(("segment", "placeholder"), SEGMENTS)
def test_is_placeholder(segment: str, placeholder: bool) -> None:
    assert is_placeholder(segment) is placeholder


@pytest.mark.parametrize(("segment", "placeholder"), SEGMENTS[:-1])
def test_an_endpoint_pattern_compiles_placeholders_to_wildcards_and_the_rest_to_literals(
    segment: str, placeholder: bool
) -> None:
    (token,) = compile_path(f"/{segment}").tokens
    assert isinstance(token, Wildcard) is placeholder


@pytest.mark.parametrize(
    ("segment", "refused"),
    [
        pytest.param("{id:x}", False, id="a-placeholder-spells-nothing"),
        pytest.param("jobs:x", True, id="a-literal-spells-its-colon"),
    ],
)
def test_only_literal_segments_make_their_escapes_ambiguous(segment: str, refused: bool) -> None:
    table = compile_routes(PolicyConfig(), [f"/api/{segment}"])
    ambiguous = table.ambiguous_escapes
    assert (ambiguous is not None and ambiguous.search("/api/jobs%3Ax") is not None) is refused
