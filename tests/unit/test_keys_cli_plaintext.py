"""`tenantgate keys` sends the admin token in clear text only where the admin API may itself
listen without TLS (loopback or unix:PATH); to any other address it refuses, as a usage error,
before a connection is made: the token goes out with the first request, before the server has
said a word."""

from __future__ import annotations

import pytest
from tenantgate.cli import keys as keys_cli
from tenantgate.cli import main


class Connected(Exception):
    """Raised in place of opening a channel: the CLI got as far as connecting."""


@pytest.fixture
def channels(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    opened: list[str] = []

    def insecure_channel(address: str) -> None:
        opened.append(address)
        raise Connected(address)

    monkeypatch.setattr(keys_cli.grpc, "insecure_channel", insecure_channel)
    monkeypatch.setenv("TG_ADMIN_TOKEN", "t" * 40)
    return opened


@pytest.mark.parametrize("address", [
    pytest.param("192.0.2.2:9002", id="another-host"),
    pytest.param("admin.example.com:9002", id="host-name"),
    pytest.param("[2001:db8::1]:9002", id="ipv6"),
    pytest.param("0.0.0.0:9002", id="any-address"),
])
def test_the_token_is_not_sent_in_clear_text_off_the_host(
        channels: list[str], capsys: pytest.CaptureFixture[str], address: str) -> None:
    code = main(["keys", "--admin", address, "--token-env", "TG_ADMIN_TOKEN",
                 "list", "--tenant", "acme"])
    assert (code, capsys.readouterr().err) == (
        2, f"tenantgate keys: --admin {address}: without --ca the admin token would cross "
           "the network in clear text; give --ca FILE (TLS), or a loopback address or "
           "unix:PATH\n")
    assert channels == []


@pytest.mark.parametrize("address", ["127.0.0.1:9002", "127.9.9.9:9002", "localhost:9002",
                                     "[::1]:9002", "unix:/run/tenantgate/admin.sock"])
def test_loopback_and_unix_sockets_may_go_without_tls(channels: list[str],
                                                      address: str) -> None:
    with pytest.raises(Connected):
        main(["keys", "--admin", address, "--token-env", "TG_ADMIN_TOKEN",
              "list", "--tenant", "acme"])
    assert channels == [address]


@pytest.mark.parametrize(("address", "problem"), [
    # gRPC reads ::1:1 as the IPv6 address ::0.1.0.1, port 443: another host, in clear text.
    pytest.param("::1:1", "an IPv6 address goes in brackets, e.g. [::1]:1", id="ipv6-loopback"),
    pytest.param("::1]:9002", "an IPv6 address goes in brackets, e.g. [::1]:9002",
                 id="opening-bracket-missing"),
    pytest.param("[::1:9002", "an IPv6 address goes in brackets, e.g. [::1]:9002",
                 id="closing-bracket-missing"),
    pytest.param("[127.0.0.1]:9002", "brackets hold an IPv6 address, e.g. [::1]:9002",
                 id="ipv4-in-brackets"),
])
def test_an_ipv6_host_without_brackets_is_refused_before_connecting(
        channels: list[str], capsys: pytest.CaptureFixture[str], address: str,
        problem: str) -> None:
    code = main(["keys", "--admin", address, "--token-env", "TG_ADMIN_TOKEN",
                 "list", "--tenant", "acme"])
    assert (code, capsys.readouterr().err) == (2, f"tenantgate keys: --admin {address}: "
                                                  f"{problem}\n")
    assert channels == []


@pytest.mark.parametrize("address", ["unix://relative/x.sock", "unix://run/admin.sock"])
def test_a_unix_url_with_a_relative_path_is_a_usage_error(
        channels: list[str], capsys: pytest.CaptureFixture[str], address: str) -> None:
    # gRPC reads what follows unix:// as an authority: exit 1 with its own error lines. The
    # config refuses this form too.
    code = main(["keys", "--admin", address, "--token-env", "TG_ADMIN_TOKEN",
                 "list", "--tenant", "acme"])
    assert (code, capsys.readouterr().err) == (
        2, f"tenantgate keys: --admin {address}: unix:// is followed by an absolute path "
           "(unix:///abs/path); write unix:PATH for a relative path\n")
    assert channels == []


def test_a_unix_url_with_an_absolute_path_is_taken(channels: list[str]) -> None:
    with pytest.raises(Connected):
        main(["keys", "--admin", "unix:///run/admin.sock", "--token-env", "TG_ADMIN_TOKEN",
              "list", "--tenant", "acme"])
    assert channels == ["unix:///run/admin.sock"]
