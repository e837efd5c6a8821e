"""`tenantgate keys` durations (--ttl, --overlap): a well-formed one too long for a float is
"at most 3650d", as a merely too long one is; only a malformed one gets the generic message."""

from __future__ import annotations

import pytest
from tenantgate.cli import main

TOO_LONG = "--{option}: at most 3650d (10 years)\n"
MALFORMED = "--{option}: must be a duration such as 30m, 12h or 90d\n"


@pytest.mark.parametrize(("value", "message"), [
    pytest.param("3651d", TOO_LONG, id="over-ten-years"),
    pytest.param("9" * 300 + "d", TOO_LONG, id="300-digit-days"),  # product past a float
    pytest.param("9" * 400 + "d", TOO_LONG, id="400-digit-days"),  # digits past a float
    pytest.param("9" * 400, TOO_LONG, id="400-digit-seconds"),
    pytest.param("9" * 400 + ".5ms", TOO_LONG, id="400-digit-milliseconds"),
    pytest.param("infd", MALFORMED, id="inf"),
    pytest.param("1e400d", MALFORMED, id="exponent"),
    pytest.param("-5d", MALFORMED, id="negative"),
])
@pytest.mark.parametrize(("option", "argv"), [
    ("ttl", ["create", "--tenant", "acme"]),
    ("overlap", ["rotate", "key-1"]),
])
def test_a_duration_too_long_for_a_float_is_too_long_not_malformed(
        option: str, argv: list[str], value: str, message: str,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TG_ADMIN_TOKEN", "t" * 40)
    # The value is read before the request is sent; a loopback channel connects lazily.
    code = main(["keys", "--admin", "127.0.0.1:9", "--token-env", "TG_ADMIN_TOKEN",
                 *argv, f"--{option}={value}"])
    assert (code, capsys.readouterr().err) == (
        2, "tenantgate keys: " + message.format(option=option))
