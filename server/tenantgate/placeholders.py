"""Which segments of a route or endpoint pattern are placeholders rather than literals."""

from __future__ import annotations


def is_placeholder(segment: str) -> bool:
    """`*`, `**` and `{name}` (a route's `{tenant}`, an endpoint's `{id}`): a placeholder stands
    for path segments and holds no literal characters to compare."""
    # One definition for policy and quota: the policy refuses escapes of the characters some
    # literal spells out, so the two must agree on what is not a literal.
    return segment in ("*", "**") or (segment.startswith("{") and segment.endswith("}"))
