"""A route or endpoint pattern Check would refuse as a request path is a config error that says
what is wrong with it, not only where Envoy's normalization stands."""

from __future__ import annotations

import pytest
from tenantgate.config.paths import as_envoy_passes


@pytest.mark.parametrize(("pattern", "said"), [
    ("/files/%u002e", "'%u0': a % needs two hex digits (write a literal % as %25)"),
    ("/files/100%", "'%': a % needs two hex digits (write a literal % as %25)"),
    ("/caf%C3%A9%E9/x", "'%C3%A9%E9': not UTF-8"),
    ("/a/%c0%ae", "'%c0': not UTF-8"),
    ("/a/%252e", "'%252e': a double-encoded escape"),
    ("/a/%2e%2e", "'%2e': Envoy normalizes paths before Check"),
], ids=["percent-u", "trailing-percent", "bad-utf8-after-good", "overlong", "double-encoded",
        "escaped-dots"])
def test_a_pattern_check_would_refuse_says_why(pattern: str, said: str) -> None:
    with pytest.raises(ValueError) as refusal:
        as_envoy_passes(pattern)
    assert str(refusal.value).startswith(said)


def test_utf8_escapes_and_a_literal_percent_pass() -> None:
    assert as_envoy_passes("/caf%C3%A9/100%25") == "/caf%C3%A9/100%25"
