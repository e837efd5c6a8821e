"""listen.health in the config and in check-config: a host:port gRPC can bind, an address of
its own, refused with its key path otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest
from tenantgate.cli import main
from tenantgate.config.load import parse_config
from tenantgate.errors import ConfigError

pytestmark = pytest.mark.unit

CONTEXT = "context: {active_key: c1, keys: [{id: c1, secret: {fromEnv: TG_TEST_CONTEXT_KEY}}]}\n"
ADMIN = ("api_keys: {hash_secret: {fromEnv: TG_TEST_CONTEXT_KEY}}\n"
         "admin: {listen: '127.0.0.1:9002', token: {fromEnv: TG_TEST_CONTEXT_KEY}}\n")


@pytest.fixture(autouse=True)
def context_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TG_TEST_CONTEXT_KEY", "k" * 40)


def issues(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, strict=True)
    return caught.value.issues


def test_the_health_listener_is_off_unless_configured() -> None:
    assert parse_config(CONTEXT).listen.health is None
    config = parse_config("listen: {health: '0.0.0.0:9003'}\n" + CONTEXT)
    assert config.listen.health == "0.0.0.0:9003"
    # Beside a Unix-socket-only listener too: kubelet cannot probe a socket in the pod.
    alone = parse_config("listen: {grpc: null, uds: /run/tg.sock, health: '[::]:9003'}\n"
                         + CONTEXT)
    assert alone.listen.health == "[::]:9003"


@pytest.mark.parametrize(("health", "message"), [
    ("'9003'", "must be host:port with a port up to 65535, e.g. 127.0.0.1:9001"),
    ("'127.0.0.1:70000'", "must be host:port with a port up to 65535, e.g. 127.0.0.1:9001"),
    ("''", "must be host:port with a port up to 65535, e.g. 127.0.0.1:9001"),
    ("':9003'", "':9003': give a host (0.0.0.0 for every IPv4 address, [::] for every "
                "address): gRPC cannot listen on an empty one"),
    ("'::1:9003'", "::1:9003: an IPv6 address goes in brackets, e.g. [::1]:9003"),
    ("9003", "Input should be a valid string"),
], ids=["no-host", "port-out-of-range", "empty", "empty-host", "ipv6-unbracketed", "a-number"])
def test_an_address_grpc_cannot_bind_is_refused_with_its_key(health: str, message: str) -> None:
    assert issues(f"listen: {{health: {health}}}\n" + CONTEXT) == [f"listen.health: {message}"]


@pytest.mark.parametrize(("listen", "admin", "message"), [
    ("{grpc: '127.0.0.1:9001', health: '127.0.0.1:9001'}", False,
     "listen.health: 127.0.0.1:9001 is also listen.grpc (127.0.0.1:9001)"),
    ("{grpc: '0.0.0.0:9001', health: '127.0.0.1:9001'}", False,
     "listen.health: 127.0.0.1:9001 is also listen.grpc (0.0.0.0:9001)"),
    ("{metrics: '0.0.0.0:9090', health: '[::]:9090'}", False,
     "listen.health: [::]:9090 is also listen.metrics (0.0.0.0:9090)"),
    ("{health: '127.0.0.1:9002'}", True,
     "admin.listen: 127.0.0.1:9002 is also listen.health (127.0.0.1:9002)"),
], ids=["on-grpc", "under-a-wildcard-grpc", "wildcard-on-metrics", "admin-on-health"])
def test_the_health_listener_needs_an_address_of_its_own(
        listen: str, admin: bool, message: str) -> None:
    text = f"listen: {listen}\n" + CONTEXT + (ADMIN if admin else "")
    assert issues(text) == [message + ": each listener needs an address of its own"]


def test_check_config_names_a_bad_health_listener(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "tenantgate.yaml"
    path.write_text("listen: {grpc: '0.0.0.0:9001', health: '0.0.0.0:9001'}\n" + CONTEXT)
    assert main(["check-config", str(path)]) == 2
    assert capsys.readouterr().err == (
        f"{path}: listen.health: 0.0.0.0:9001 is also listen.grpc (0.0.0.0:9001): each "
        "listener needs an address of its own\n")
    path.write_text("listen: {grpc: '0.0.0.0:9001', health: '0.0.0.0:9003'}\n" + CONTEXT)
    assert main(["check-config", str(path)]) == 0
    assert ": ok (" in capsys.readouterr().out
