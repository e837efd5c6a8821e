"""Hostile or mistaken config input: each is refused with its key path, never a traceback,
a hang or a memory blow-up."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from tenantgate.cli import main
from tenantgate.config.files import read_small_file
from tenantgate.config.load import parse_config
from tenantgate.errors import ConfigError
from tenantgate.quota.rls_config import load_domains

pytestmark = pytest.mark.unit

CONTEXT = "context: {active_key: c1, keys: [{id: c1, secret: {fromEnv: TG_TEST_CONTEXT_KEY}}]}\n"


@pytest.fixture(autouse=True)
def context_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TG_TEST_CONTEXT_KEY", "k" * 40)


def issues(text: str, base_dir: Path | str = ".") -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, base_dir=base_dir, strict=True)
    return caught.value.issues


# Nine aliases to nine aliases ... nine levels deep: a few hundred bytes, 9**9 values built.
BOMB = "".join(f"l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 9) if n else 'x'}]\n"
               for n in range(9))


def test_yaml_alias_bomb_is_refused_before_it_expands() -> None:
    text = ("issuers:\n- name: dev\n  issuer: https://dev.example\n  audiences: [api]\n"
            "  tenant_pattern: '^[a-z]+$'\n  jwks:\n    inline:\n"
            + "".join(f"      {line}\n" for line in BOMB.splitlines()) + CONTEXT)
    assert issues(text) == [
        "line 9 column 16: YAML aliases (*l0) are not allowed: write the value out"]


def test_a_single_alias_is_refused_too() -> None:
    text = "tenants: {registry: {acme: &t {plan: null}, globex: *t}}\n" + CONTEXT
    assert issues(text) == [
        "line 1 column 53: YAML aliases (*t) are not allowed: write the value out"]


def test_rate_limit_file_alias_bomb_is_refused(tmp_path: Path) -> None:
    rules = tmp_path / "rl.yaml"
    rules.write_text("domain: d\n" + BOMB + "descriptors: []\n")
    with pytest.raises(ConfigError) as caught:
        load_domains([str(rules)])
    assert caught.value.issues == [
        f"{rules}: line 3 column 10: YAML aliases (*l0) are not allowed: write the value out"]


def with_secret_file(name: str) -> str:
    return CONTEXT.replace("fromEnv: TG_TEST_CONTEXT_KEY", f"fromFile: '{name}'")


@pytest.mark.parametrize(("name", "message"), [
    ("/dev/zero", "/dev/zero is not a regular file"),
    ("adir", "{dir}/adir is not a regular file"),
    ("huge.key", "{dir}/huge.key is larger than 64 KiB: not a secret"),
    ("missing.key", "cannot read {dir}/missing.key: No such file or directory"),
], ids=["dev-zero", "directory", "over-64-KiB", "missing"])
def test_secret_file_that_is_no_secret_is_refused(tmp_path: Path, name: str,
                                                  message: str) -> None:
    (tmp_path / "adir").mkdir()
    (tmp_path / "huge.key").write_bytes(b"k" * (64 * 1024 + 1))
    assert issues(with_secret_file(name), base_dir=tmp_path) == [
        "context.keys[0].secret: " + message.format(dir=tmp_path)]


def test_secret_file_of_exactly_64_kib_is_read(tmp_path: Path) -> None:
    (tmp_path / "big.key").write_bytes(b"k" * (64 * 1024))
    config = parse_config(with_secret_file("big.key"), base_dir=tmp_path)
    assert len(config.context.keys[0].secret.value) == 64 * 1024


def test_a_fifo_swapped_in_after_the_type_check_is_refused_without_blocking(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A reload reads files on the event loop: a blocking open of a FIFO with no writer would
    # stop the server. The swap is simulated: stat sees the regular file that was there.
    (regular := tmp_path / "regular").write_text("secret")
    os.mkfifo(fifo := tmp_path / "fifo")
    real_stat = os.stat
    monkeypatch.setattr(os, "stat", lambda p, *a, **k: real_stat(
        regular if Path(p) == fifo else p, *a, **k))
    outcome: list[BaseException | bytes] = []

    def read() -> None:
        try:
            outcome.append(read_small_file(fifo, 64, "not a secret"))
        except ValueError as exc:
            outcome.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(5)
    if reader.is_alive():  # blocked in open(): a writer lets it go, then fail
        os.close(os.open(fifo, os.O_WRONLY))
        reader.join(5)
        pytest.fail("reading the FIFO blocked")
    assert [str(o) for o in outcome] == [f"{fifo} is not a regular file"]


def test_secret_variable_that_is_not_utf8_is_named_not_echoed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TG_TEST_CONTEXT_KEY", "k" * 40 + "\udcff")  # the byte 0xff
    assert issues(CONTEXT) == [
        "context.keys[0].secret: environment variable TG_TEST_CONTEXT_KEY is not valid UTF-8"]


@pytest.mark.parametrize(("spelling", "documented"), [("from_env", "fromEnv"),
                                                     ("from_file", "fromFile")])
def test_a_secret_takes_only_its_documented_spelling(spelling: str, documented: str) -> None:
    # The Python field name was taken too: one key with two spellings, one undocumented.
    text = CONTEXT.replace("fromEnv: TG_TEST_CONTEXT_KEY", f"{spelling}: TG_TEST_CONTEXT_KEY")
    [issue] = issues(text)
    assert issue.startswith(f"context.keys[0].secret.{spelling}: unknown key")
    assert documented in issue


def with_jwks_file(name: str) -> str:
    return ("issuers:\n- {name: dev, issuer: https://dev.example, audiences: [api], "
            f"tenant_pattern: '^[a-z]+$', jwks: {{file: '{name}'}}}}\n" + CONTEXT)


@pytest.mark.parametrize(("name", "content", "message"), [
    ("missing.json", None, "cannot read {dir}/missing.json: No such file or directory"),
    ("adir", None, "{dir}/adir is not a regular file"),
    ("/dev/zero", None, "/dev/zero is not a regular file"),
    ("big.json", b" " * (512 * 1024 + 1), "{dir}/big.json is larger than 512 KiB: not a JWKS "
                                          "document"),
    ("garbage.json", b"keys: []", "{dir}/garbage.json is not a JWKS document (not UTF-8 JSON)"),
    ("latin1.json", b'{"keys": [], "x": "\xe9"}',
     "{dir}/latin1.json is not a JWKS document (not UTF-8 JSON)"),
    ("deep.json", b"[" * 100_000, "{dir}/deep.json is not a JWKS document (not UTF-8 JSON)"),
    ("list.json", b"[]", "{dir}/list.json is not a JWKS document (an object with a keys list)"),
    ("nokeys.json", b'{"kty": "RSA"}',
     "{dir}/nokeys.json is not a JWKS document (an object with a keys list)"),
], ids=["missing", "directory", "dev-zero", "over-512-KiB", "not-json", "not-utf8", "too-deep",
        "a-list", "no-keys-list"])
def test_jwks_file_the_key_set_could_not_use_is_refused(
        tmp_path: Path, name: str, content: bytes | None, message: str) -> None:
    (tmp_path / "adir").mkdir()
    if content is not None:
        (tmp_path / name).write_bytes(content)
    assert issues(with_jwks_file(name), base_dir=tmp_path) == [
        "issuers[0].jwks.file: " + message.format(dir=tmp_path)]


def test_an_unusable_jwks_file_fails_check_config(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (config := tmp_path / "tenantgate.yaml").write_text(with_jwks_file("missing.json"))
    assert main(["check-config", str(config)]) == 2
    assert capsys.readouterr().err == (
        f"{config}: issuers[0].jwks.file: cannot read {tmp_path}/missing.json: No such file "
        "or directory\n")


def test_an_unusable_jwks_file_is_a_warning_when_serve_loads_the_config(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # It may be mid-rewrite: the key set fetches it again until it can be read.
    config = parse_config(with_jwks_file("missing.json"), base_dir=tmp_path)
    assert config.issuers[0].jwks is not None
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        f"issuers[0].jwks.file: cannot read {tmp_path}/missing.json: No such file or "
        "directory (its keys are fetched again until it can be read)"]


def test_jwks_file_with_a_keys_list_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "jwks.json").write_text('{"keys": []}')
    config = parse_config(with_jwks_file("jwks.json"), base_dir=tmp_path)
    assert config.issuers[0].jwks is not None
    assert config.issuers[0].jwks.file == f"{tmp_path}/jwks.json"


ADMIN = ("api_keys: {hash_secret: {fromEnv: TG_TEST_CONTEXT_KEY}}\n"
         "admin: {listen: '%s', token: {fromEnv: TG_TEST_CONTEXT_KEY}}\n")


@pytest.mark.parametrize(("listen", "admin", "message"), [
    ("{grpc: '127.0.0.1:9001', metrics: '127.0.0.1:9001'}", None,
     "listen.metrics: 127.0.0.1:9001 is also listen.grpc (127.0.0.1:9001)"),
    ("{grpc: '0.0.0.0:9001', metrics: '127.0.0.1:9001'}", None,
     "listen.metrics: 127.0.0.1:9001 is also listen.grpc (0.0.0.0:9001)"),
    ("{grpc: '[::]:9001', metrics: '127.0.0.1:9001'}", None,
     "listen.metrics: 127.0.0.1:9001 is also listen.grpc ([::]:9001)"),
    ("{grpc: '127.0.0.1:9001', metrics: ':9001'}", None,
     "listen.metrics: :9001 is also listen.grpc (127.0.0.1:9001)"),
    ("{grpc: '127.0.0.1:9001', metrics: null}", "127.0.0.1:9001",
     "admin.listen: 127.0.0.1:9001 is also listen.grpc (127.0.0.1:9001)"),
    ("{grpc: null, uds: tg.sock, metrics: null}", "unix:tg.sock",
     "admin.listen: unix:{dir}/tg.sock is also listen.uds (unix:{dir}/tg.sock)"),
    ("{grpc: null, uds: /run/tg.sock, metrics: null}", "unix:///run/tg.sock",
     "admin.listen: unix:///run/tg.sock is also listen.uds (unix:/run/tg.sock)"),
], ids=["grpc-is-metrics", "wildcard-v4-covers-loopback", "wildcard-v6-covers-v4",
        "empty-metrics-host-covers-v4", "admin-is-grpc", "admin-socket-is-uds",
        "admin-unix-url-is-uds"])
def test_two_listeners_on_one_address_are_refused(
        tmp_path: Path, listen: str, admin: str | None, message: str) -> None:
    text = f"listen: {listen}\n" + CONTEXT + (ADMIN % admin if admin else "")
    assert issues(text, base_dir=tmp_path) == [
        message.format(dir=tmp_path) + ": each listener needs an address of its own"]


@pytest.mark.parametrize("listen", [
    "{grpc: '127.0.0.1:0', metrics: '127.0.0.1:0'}",  # port 0: a fresh port each
    "{grpc: '127.0.0.1:9001', metrics: '127.0.0.2:9001'}",
    "{grpc: '0.0.0.0:9001', metrics: '[::1]:9001'}",
    "{grpc: '[::1]:9001', metrics: ':9001'}",  # metrics binds the empty host as 0.0.0.0
], ids=["both-port-0", "other-host", "v4-wildcard-v6-loopback", "empty-metrics-host-v6-grpc"])
def test_listeners_that_can_coexist_are_accepted(listen: str) -> None:
    parse_config(f"listen: {listen}\n" + CONTEXT)


@pytest.mark.parametrize(("listen", "admin", "message"), [
    ("{grpc: ':9001'}", None, "listen.grpc: ':9001': give a host"),
    ("{grpc: '127.0.0.1:9001'}", ":9002", "admin.listen: ':9002': give a host"),
    # gRPC reads `::1:9001` as one IPv6 address on port 443
    ("{grpc: '::1:9001'}", None,
     "listen.grpc: ::1:9001: an IPv6 address goes in brackets, e.g. [::1]:9001"),
], ids=["grpc", "admin", "grpc-ipv6-unbracketed"])
def test_a_grpc_listener_without_a_host_is_refused(listen: str, admin: str | None,
                                                   message: str) -> None:
    # gRPC cannot bind an empty host: check-config passed it and serve failed to bind.
    text = f"listen: {listen}\n" + CONTEXT + (ADMIN % admin if admin else "")
    found = issues(text)
    assert len(found) == 1 and found[0].startswith(message)


CONTEXT_WITH = ("context: {active_key: c1, "
                "keys: [{id: c1, secret: {fromEnv: TG_TEST_CONTEXT_KEY}}], %s}\n")
NEEDED = ": tenantgate and the generated Envoy config remove or overwrite this one"


@pytest.mark.parametrize(("setting", "message"), [
    ("strip_headers: [x-tenant-plan, Authorization]",
     "context.strip_headers[1]: authorization is a header requests need" + NEEDED),
    ("tenant_header: authorization", "context.tenant_header: authorization is a header "
                                     "requests need" + NEEDED),
    ("header: host", "context.header: host is a header requests need" + NEEDED),
    ("subject_header: content-length",
     "context.subject_header: content-length is a header requests need" + NEEDED),
    ("strip_headers: [transfer-encoding]",
     "context.strip_headers[0]: transfer-encoding is a header requests need" + NEEDED),
    ("tenant_header: x-tenant-context",
     "context.header: x-tenant-context is also context.tenant_header: each header tenantgate "
     "sets needs a name of its own"),
    ("subject_header: x-tenant-id",
     "context.subject_header: x-tenant-id is also context.tenant_header: each header "
     "tenantgate sets needs a name of its own"),
    ("header: upgrade", "context.header: upgrade is a header requests need" + NEEDED),
    ("tenant_header: connection",
     "context.tenant_header: connection is a header requests need" + NEEDED),
], ids=["strip-authorization", "tenant-header-authorization", "header-host",
        "subject-content-length", "strip-transfer-encoding", "tenant-header-is-header",
        "subject-header-is-tenant-header", "header-upgrade", "tenant-header-connection"])
def test_trusted_headers_that_would_break_every_request_are_refused(
        setting: str, message: str) -> None:
    assert issues(CONTEXT_WITH % setting) == [message]


def test_hop_by_hop_headers_may_be_stripped() -> None:
    # Envoy drops them itself; stripping upgrade turns off WebSocket and h2c upgrades.
    hop_by_hop = ["upgrade", "connection", "te", "keep-alive", "proxy-connection"]
    config = parse_config(CONTEXT_WITH % f"strip_headers: [{', '.join(hop_by_hop)}]")
    assert config.context.strip_headers == hop_by_hop


@pytest.mark.parametrize("setting", [
    "strip_headers: [':authority']", "tenant_header: ':path'", "header: ':method'"])
def test_a_pseudo_header_is_no_header_name(setting: str) -> None:
    [message] = issues(CONTEXT_WITH % setting)
    assert message.endswith(": must be an HTTP header name such as x-api-key")


@pytest.mark.parametrize(("credentials", "context", "message"), [
    ("x-tenant-plan", "", "x-tenant-plan is a trusted header (context.*) or an override "
     "header, which the generated Envoy config removes before ext_authz: no API key would "
     "reach tenantgate"),
    ("X-Tenant-Id", "", "x-tenant-id is a trusted header (context.*) or an override header, "
     "which the generated Envoy config removes before ext_authz: no API key would reach "
     "tenantgate"),
    ("x-api-key", "strip_headers: [x-api-key]", "x-api-key is a trusted header (context.*) or "
     "an override header, which the generated Envoy config removes before ext_authz: no API "
     "key would reach tenantgate"),
    ("x-http-method-override", "", "x-http-method-override is a trusted header (context.*) or "
     "an override header, which the generated Envoy config removes before ext_authz: no API "
     "key would reach tenantgate"),
    ("authorization", "", "authorization is the JWT's header: the API key needs a header of "
     "its own"),
    ("host", "", "host is a header requests need for themselves: the API key needs one of its "
     "own"),
], ids=["stripped", "set", "stripped-explicitly", "override", "authorization", "host"])
def test_an_api_key_header_tenantgate_removes_or_needs_is_refused(
        credentials: str, context: str, message: str) -> None:
    text = (f"credentials: {{api_key_header: {credentials}}}\n"
            + (CONTEXT_WITH % context if context else CONTEXT))
    assert issues(text) == [f"credentials.api_key_header: {message}"]


@pytest.mark.parametrize("key, text", [
    ("credentials.api_key_header", "credentials: {api_key_header: x_api_key}\n" + CONTEXT),
    ("context.subject_header", CONTEXT_WITH % "subject_header: x_tenant_subject"),
    ("context.strip_headers[0]", CONTEXT_WITH % "strip_headers: [x_tenant_plan]"),
], ids=["api-key-header", "subject-header", "strip-headers"])
def test_a_header_name_with_an_underscore_is_refused(key: str, text: str) -> None:
    # Envoy refuses requests carrying one (an API key there could never arrive), and a strip
    # of x_tenant_plan would leave x-tenant-plan, which WSGI reads as the same header.
    assert issues(text) == [f"{key}: must not hold an underscore: Envoy refuses requests "
                            "with one (use - instead)"]


STOP_WAIT = ": must be at most 1h: Kubernetes' grace period and every orchestrator's stop " \
    "timeout are far shorter"
LIMIT = ": must be at most 36500d (100 years)"


@pytest.mark.parametrize(("text", "message"), [
    ("listen: {shutdown_delay: 1180591620717411303424}\n", "listen.shutdown_delay" + LIMIT),
    ("listen: {shutdown_delay: 3601}\n", "listen.shutdown_delay" + STOP_WAIT),
    ("listen: {drain_timeout: 2h}\n", "listen.drain_timeout" + STOP_WAIT),
    ("issuers:\n- name: dev\n  issuer: https://dev.example\n  audiences: [api]\n"
     "  tenant_pattern: '^[a-z]+$'\n  jwks: {url: 'https://dev.example/jwks', timeout: 1.0e+12}\n",
     "issuers[0].jwks.timeout" + LIMIT),
    ("quota: {redis: {url: 'redis://localhost', timeout: 36501d}}\n", "quota.redis.timeout"
     + LIMIT),
], ids=["shutdown-delay-huge", "shutdown-delay-over-1h", "drain-timeout-2h", "jwks-timeout",
        "redis-timeout"])
def test_a_duration_too_long_to_wait_is_refused(text: str, message: str) -> None:
    assert message in issues(text + CONTEXT)


def test_an_hour_of_draining_is_accepted() -> None:
    config = parse_config("listen: {drain_timeout: 1h, shutdown_delay: 3600}\n"
                          "credentials: {rejected_token_cache_ttl: 1h}\n" + CONTEXT)
    assert (config.listen.drain_timeout, config.listen.shutdown_delay) == (3600.0, 3600.0)


@pytest.mark.parametrize(("text", "message"), [
    ("credentials: {token_cache_entries: true}\n",
     "credentials.token_cache_entries: must be a number, not true or false"),
    ("audit: {sample_allow: true}\n", "audit.sample_allow: must be a number, not true or false"),
    ("quota: {enabled: 0}\n", "quota.enabled: must be true or false"),
    ("quota: {enabled: 'no'}\n", "quota.enabled: must be true or false"),
    ("listen: {uvloop: 1}\n", "listen.uvloop: must be true or false"),
    ("quota: {plans: {free: {rate: 10/s, burst: true}}}\n",
     "quota.plans.free.burst: must be a number, not true or false"),
    ("listen: {drain_timeout: true}\n",
     "listen.drain_timeout: must be a duration such as 30s, 500ms, 5m"),
    ("credentials: {token_cache_bytes: true}\n",
     "credentials.token_cache_bytes: must be a size such as 1048576, 64KiB or 10MiB"),
], ids=["count-true", "number-true", "flag-0", "flag-quoted-no", "uvloop-1", "burst-true",
        "duration-true", "size-true"])
def test_a_value_of_the_wrong_type_is_refused_not_coerced(text: str, message: str) -> None:
    assert message in issues(text + CONTEXT)


def test_numbers_and_yaml_booleans_are_still_read() -> None:
    config = parse_config("audit: {sample_allow: 1, enabled: yes}\nquota: {enabled: off}\n"
                          "credentials: {token_cache_entries: 5, token_cache_bytes: 1024}\n"
                          "listen: {drain_timeout: 2.5}\n" + CONTEXT)
    assert (config.audit.sample_allow, config.audit.enabled, config.quota.enabled) == (
        1.0, True, False)
    assert (config.credentials.token_cache_entries, config.listen.drain_timeout) == (5, 2.5)


def test_an_api_keys_error_is_not_followed_by_a_claim_that_api_keys_is_missing() -> None:
    # admin's check read a failed api_keys as absent and added a second, false error.
    text = (CONTEXT + "api_keys: {hash_secret: {fromEnv: TG_TEST_CONTEXT_KEY}, bogus: 1}\n"
            "admin: {listen: '127.0.0.1:9002', token: {fromEnv: TG_TEST_CONTEXT_KEY}}\n")
    found = issues(text)
    assert len(found) == 1 and found[0].startswith("api_keys.bogus")
