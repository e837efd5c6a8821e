"""`tenantgate envoy-config`: every rendered bootstrap passes `envoy --mode validate`, the
checked-in examples equal the generator's output, and the security-relevant choices are there."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e_support import base_config
from tenantgate.cli import main
from tenantgate.config.envoy import EnvoyConfigError, EnvoyOptions, bootstrap_dict, render
from tenantgate.config.load import load_config
from tenantgate.config.model import Config
from tenantgate.config.quota import parse_rate
from tenantgate.testing.binaries import free_port
from tenantgate.testing.envoy import EnvoyProcess
from tenantgate.testing.ports import on_fresh_ports

EXAMPLES = Path(__file__).resolve().parents[2] / "envoy"
EXAMPLE_CONFIG = EXAMPLES / "tenantgate.yaml"
MODES = ["sidecar", "front"]


@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch) -> Config:
    monkeypatch.setenv("TENANTGATE_CONTEXT_KEY", "x" * 32)
    return load_config(EXAMPLE_CONFIG)


def http_manager(bootstrap: dict[str, Any]) -> dict[str, Any]:
    listener = bootstrap["static_resources"]["listeners"][0]
    manager: dict[str, Any] = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return manager


def http_filter(bootstrap: dict[str, Any], name: str) -> dict[str, Any]:
    found = [f for f in http_manager(bootstrap)["http_filters"] if f["name"] == name]
    assert len(found) == 1, name
    config: dict[str, Any] = found[0]["typed_config"]
    return config


def validated(config: Config, options: EnvoyOptions, envoy_path: str) -> str:
    """What `envoy --mode validate` says of the bootstrap rendered for `config` and `options`."""
    envoy = EnvoyProcess(render(config, options), binary=envoy_path)
    try:
        return envoy.validate()
    finally:
        envoy.close()


def cluster_address(bootstrap: dict[str, Any], name: str) -> dict[str, Any]:
    cluster = next(c for c in bootstrap["static_resources"]["clusters"] if c["name"] == name)
    address: dict[str, Any] = (
        cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"])
    return address


@pytest.mark.parametrize("mode", MODES)
def test_checked_in_bootstrap_equals_the_generator_output(example: Config, mode: str) -> None:
    rendered = render(example, EnvoyOptions(mode=mode),  # type: ignore[arg-type]
                      source="envoy/tenantgate.yaml")
    assert (EXAMPLES / f"{mode}.yaml").read_text() == rendered, (
        f"envoy/{mode}.yaml is stale: TENANTGATE_CONTEXT_KEY=... tenantgate envoy-config "
        f"envoy/tenantgate.yaml --mode {mode} -o envoy/{mode}.yaml")


@pytest.mark.parametrize("rate_limit", [True, False], ids=["rate-limit", "no-rate-limit"])
@pytest.mark.parametrize("mode", MODES)
def test_generated_bootstrap_passes_envoy_validate(example: Config, envoy_path: str, mode: str,
                                                   rate_limit: bool) -> None:
    options = EnvoyOptions(mode=mode, rate_limit=rate_limit)  # type: ignore[arg-type]
    assert "OK" in validated(example, options, envoy_path)


def test_sidecar_calls_tenantgate_over_its_unix_socket(example: Config) -> None:
    bootstrap = bootstrap_dict(example, EnvoyOptions(mode="sidecar"))
    assert cluster_address(bootstrap, "tenantgate") == {
        "pipe": {"path": "/run/tenantgate/authz.sock"}}


def test_front_calls_tenantgate_over_tcp(example: Config) -> None:
    bootstrap = bootstrap_dict(example, EnvoyOptions(mode="front", authz="10.0.0.7:9001"))
    assert cluster_address(bootstrap, "tenantgate") == {
        "socket_address": {"address": "10.0.0.7", "port_value": 9001}}


def test_front_reaches_tenantgate_by_service_name(example: Config, envoy_path: str) -> None:
    """deploy/README.md: a front Envoy calls <release>-tenantgate.<ns>.svc.cluster.local:9001.
    A STATIC cluster takes IPs only: Envoy refused the whole bootstrap."""
    options = EnvoyOptions(mode="front", authz="tenantgate.tenantgate.svc.cluster.local:9001")
    bootstrap = bootstrap_dict(example, options)
    cluster = next(c for c in bootstrap["static_resources"]["clusters"]
                   if c["name"] == "tenantgate")
    assert cluster["type"] == "STRICT_DNS"
    assert "OK" in validated(example, options, envoy_path)


def test_ext_authz_fails_closed_with_503_and_sends_the_plain_header_map(example: Config) -> None:
    authz = http_filter(bootstrap_dict(example, EnvoyOptions()), "envoy.filters.http.ext_authz")
    assert authz["failure_mode_allow"] is False
    assert authz["status_on_error"] == {"code": "ServiceUnavailable"}
    assert authz["transport_api_version"] == "V3"
    assert authz.get("encode_raw_headers", False) is False  # see docs/envoy.md
    sent = {p["exact"] for p in authz["allowed_headers"]["patterns"]}
    assert {"authorization", "x-api-key", "content-type", "x-request-id"} <= sent
    assert not sent & {"x-tenant-id", "x-tenant-context", "cookie"}


def test_trusted_headers_are_stripped_early_and_never_on_the_route(example: Config) -> None:
    manager = http_manager(bootstrap_dict(example, EnvoyOptions()))
    [early] = manager["early_header_mutation_extensions"]
    removed = [m["remove"] for m in early["typed_config"]["mutations"]]
    assert removed == ["x-tenant-id", "x-tenant-context", "x-tenant-subject", "x-tenant-plan",
                       "x-tenant-scopes", "x-tenant-roles", "x-http-method-override",
                       "x-http-method", "x-method-override", "x-original-url",
                       "x-rewrite-url", "x-original-uri", "x-forwarded-uri"]
    # A route-level removal runs after ext_authz and would delete tenantgate's own headers.
    assert "request_headers_to_remove" not in yaml.safe_dump(manager["route_config"])


def test_paths_are_normalized_and_encoded_slashes_refused(example: Config) -> None:
    manager = http_manager(bootstrap_dict(example, EnvoyOptions()))
    assert manager["normalize_path"] is True
    assert manager["merge_slashes"] is True
    assert manager["path_with_escaped_slashes_action"] == "REJECT_REQUEST"
    assert (manager["common_http_protocol_options"]["headers_with_underscores_action"]
            == "REJECT_REQUEST")


def test_rate_limit_descriptors_take_the_tenant_from_ext_authz_metadata(
        example: Config) -> None:
    bootstrap = bootstrap_dict(example, EnvoyOptions())
    assert http_filter(bootstrap, "envoy.filters.http.ratelimit")["domain"] == "tenantgate"
    route = http_manager(bootstrap)["route_config"]["virtual_hosts"][0]["routes"][0]["route"]
    first = route["rate_limits"][0]["actions"][0]["metadata"]
    assert first["descriptor_key"] == "tenant"
    assert first["metadata_key"] == {"key": "envoy.filters.http.ext_authz",
                                     "path": [{"key": "tenant"}]}


def test_rate_limit_filter_is_left_out_when_not_asked_for(example: Config) -> None:
    bootstrap = bootstrap_dict(example, EnvoyOptions(rate_limit=False))
    names = [f["name"] for f in http_manager(bootstrap)["http_filters"]]
    assert names == ["envoy.filters.http.ext_authz", "envoy.filters.http.router"]


def test_rate_limit_without_a_domain_is_a_precise_error(example: Config) -> None:
    example.quota.ratelimit_service.config_files.clear()
    with pytest.raises(EnvoyConfigError, match="needs a domain"):
        bootstrap_dict(example, EnvoyOptions(rate_limit=True))


# A front Envoy to a remote tenantgate, plaintext allowed: without --authz-plaintext these cases
# would pass only while the option checks happen to run before the plaintext refusal.
REMOTE_FRONT = ["--mode", "front", "--authz", "10.0.0.7:9001", "--authz-plaintext"]


@pytest.mark.parametrize("argv, message", [
    # tenantgate answers OK to every ShouldRateLimit of a domain its files do not declare.
    (["--rate-limit-domain", "edge"], "tenantgate: --rate-limit-domain: 'edge' is not the "
                                      "domain of any quota.ratelimit_service.config_files"),
    # Sidecar mode calls tenantgate over listen.uds: --authz was dropped without a word.
    (["--authz", "10.0.0.7:9001"], "tenantgate: --authz: sidecar mode calls tenantgate over "
                                   "listen.uds"),
    # A domain for a filter that is not rendered was dropped without a word.
    (["--no-rate-limit", "--rate-limit-domain", "tenantgate"],
     "tenantgate: --rate-limit-domain: the rate-limit filter is off"),
    # An empty domain was ignored: the default domain, or nothing with --no-rate-limit.
    (["--rate-limit-domain", ""], "tenantgate: --rate-limit-domain: must not be empty"),
    (["--no-rate-limit", "--rate-limit-domain", ""],
     "tenantgate: --rate-limit-domain: must not be empty"),
    # Behind a mesh every request comes from the gateway: one bucket would hold them all.
    (["--client-limit", "100/s"], "tenantgate: --client-limit: front mode only"),
    ([*REMOTE_FRONT, "--client-limit-addresses", "50"],
     "tenantgate: --client-limit-addresses: needs --client-limit"),
    ([*REMOTE_FRONT, "--client-limit", "10/10ms"],
     "tenantgate: --client-limit: Envoy refills a bucket at most every 50 ms, got '10/10ms'"),
    ([*REMOTE_FRONT, "--xff-num-trusted-hops", "4294967296"],
     "tenantgate: --xff-num-trusted-hops: must be from 0 to 4294967295, got 4294967296"),
])
def test_cli_refuses_options_that_would_do_nothing(
        example: Config, capsys: pytest.CaptureFixture[str], argv: list[str],
        message: str) -> None:
    assert main(["envoy-config", str(EXAMPLE_CONFIG), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1


@pytest.mark.parametrize("argv, message", [
    (["--client-limit", "lots"], "must be a rate such as 100/s"),
    (["--client-limit", "0/s"], "count and period must be at least 1"),
    (["--client-limit", "1/s", "--client-limit-addresses", "-5"],
     "must be a positive whole number, got '-5'"),
])
def test_cli_refuses_a_bad_client_limit_as_a_usage_error(
        capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["envoy-config", str(EXAMPLE_CONFIG), "--mode", "front", *argv])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_client_limit_runs_before_ext_authz_with_a_bucket_per_address(
        example: Config, envoy_path: str) -> None:
    options = EnvoyOptions(mode="front", authz="10.0.0.7:9001",
                           client_limit=parse_rate("6000/min"), client_limit_addresses=500)
    names = [f["name"] for f in http_manager(bootstrap_dict(example, options))["http_filters"]]
    assert names[:2] == ["envoy.filters.http.local_ratelimit", "envoy.filters.http.ext_authz"]
    limiter = http_filter(bootstrap_dict(example, options), "envoy.filters.http.local_ratelimit")
    # One bucket per IPv4 address and per IPv6 /64: a client cannot take a new one per request.
    assert limiter["rate_limits"] == [{"actions": [{"masked_remote_address": {
        "v4_prefix_mask_len": 32, "v6_prefix_mask_len": 64}}]}]
    assert limiter["descriptors"] == [{  # no value: a wildcard, one bucket per address
        "entries": [{"key": "masked_remote_address"}],
        "token_bucket": {"max_tokens": 6000, "tokens_per_fill": 6000, "fill_interval": "60s"}}]
    assert limiter["max_dynamic_descriptors"] == 500
    assert "OK" in validated(example, options, envoy_path)


def test_rate_limit_is_off_by_default_while_quota_is_disabled(example: Config) -> None:
    """With quota.enabled false tenantgate answers OK to every ShouldRateLimit: the filter would
    cost a call per request and limit nothing; asking for it is an error."""
    config = example.model_copy(update={
        "quota": example.quota.model_copy(update={"enabled": False})})
    manager = http_manager(bootstrap_dict(config, EnvoyOptions()))
    assert "envoy.filters.http.ratelimit" not in [f["name"] for f in manager["http_filters"]]
    with pytest.raises(EnvoyConfigError, match="needs a domain"):
        bootstrap_dict(config, EnvoyOptions(rate_limit=True))


@pytest.mark.parametrize("argv, message", [
    (["--upstream", "nowhere"], "tenantgate: --upstream: must be host:port, got 'nowhere'"),
    (["--listen", "127.0.0.1:99999"],
     "tenantgate: --listen: the port must be from 1 to 65535, got '127.0.0.1:99999'"),
    (["--admin", "0.0.0.0:9901"], "tenantgate: --admin: Envoy's admin interface must stay on "
                                  "loopback"),
    # Envoy resolves no name for a listener or the admin address ("malformed IP address").
    (["--listen", "localhost:8080"], "tenantgate: --listen: must be an IP address"),
    (["--admin", "localhost:9901"], "tenantgate: --admin: must be an IP address"),
    (["--upstream", "[]:8000"], "tenantgate: --upstream: must be host:port, got '[]:8000'"),
])
def test_cli_rejects_bad_addresses_in_one_line(example: Config, capsys: pytest.CaptureFixture[str],
                                               argv: list[str], message: str) -> None:
    assert main(["envoy-config", str(EXAMPLE_CONFIG), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1


def test_cli_writes_the_bootstrap_to_a_file(example: Config, tmp_path: Path) -> None:
    out = tmp_path / "envoy.yaml"
    assert main(["envoy-config", str(EXAMPLE_CONFIG), "--mode", "front", "-o", str(out)]) == 0
    assert out.read_text() == render(example, EnvoyOptions(mode="front"),
                                     source=str(EXAMPLE_CONFIG))


def test_cli_names_the_bad_config_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("context: {active_key: k1, keys: []}\n")
    assert main(["envoy-config", str(bad)]) == 2
    assert "context.keys" in capsys.readouterr().err


@pytest.mark.parametrize("failure_mode, deny", [("closed", True), ("open", False)])
def test_rate_limit_filter_failure_follows_the_quota_failure_mode(
        example: Config, failure_mode: str, deny: bool) -> None:
    quota = example.quota.model_copy(update={"failure_mode": failure_mode})
    config = example.model_copy(update={"quota": quota})
    limiter = http_filter(bootstrap_dict(config, EnvoyOptions()), "envoy.filters.http.ratelimit")
    assert limiter.get("failure_mode_deny", False) is deny
    assert limiter["status_on_error"] == {"code": "ServiceUnavailable"}


def front_envoy_alone(directory: Path, envoy_path: str, **options: Any
                      ) -> tuple[EnvoyProcess, int]:
    """A started front-mode Envoy with nothing behind it (no tenantgate, no app), and its port."""
    config_path = directory / "tenantgate.yaml"
    (directory / "jwks.json").write_text('{"keys": []}')
    config_path.write_text(yaml.safe_dump(base_config(directory)))

    def attempt() -> tuple[EnvoyProcess, int]:  # fresh ports on every attempt
        port = free_port()
        envoy = EnvoyProcess(render(load_config(config_path), EnvoyOptions(
            mode="front", listen=f"127.0.0.1:{port}", upstream="127.0.0.1:1",
            authz="127.0.0.1:1", admin=f"127.0.0.1:{free_port()}", rate_limit=False,
            **options)), binary=envoy_path)
        return envoy.start(), port  # a failed start closes it, directory and all

    return on_fresh_ports(attempt)


def test_a_client_dripping_its_headers_is_cut_off(tmp_path: Path, envoy_path: str) -> None:
    # Envoy's own default waits for headers forever: a few connections sending a header byte
    # every few seconds were held open indefinitely (this project's pentest of the demo).
    envoy, port = front_envoy_alone(tmp_path, envoy_path)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=60) as client:
            client.sendall(b"GET /tenants/acme/notes HTTP/1.1\r\nHost: app\r\n")  # never ends
            answer = client.recv(4096)
    finally:
        envoy.close()  # stop() would leave its directory behind
    assert answer.startswith(b"HTTP/1.1 408"), answer


def test_connections_time_and_buffers_are_bounded(example: Config) -> None:
    bootstrap = bootstrap_dict(example, EnvoyOptions(max_connections=1234))
    manager = http_manager(bootstrap)
    # A connection that never sends a byte was kept an hour; a passed request could drip its
    # body for ever (the route timeout starts once the request is complete).
    assert manager["common_http_protocol_options"]["idle_timeout"] == "300s"
    assert (manager["stream_idle_timeout"], manager["request_timeout"]) == ("300s", "300s")
    resources = bootstrap["static_resources"]
    assert resources["listeners"][0]["per_connection_buffer_limit_bytes"] == 32768
    app = next(c for c in resources["clusters"] if c["name"] == "app")
    assert app["per_connection_buffer_limit_bytes"] == 32768
    monitor, = bootstrap["overload_manager"]["resource_monitors"]
    assert monitor["name"] == "envoy.resource_monitors.global_downstream_max_connections"
    assert int(monitor["typed_config"]["max_active_downstream_connections"]) == 1234


def test_connections_past_the_cap_are_refused(tmp_path: Path, envoy_path: str) -> None:
    # Without a cap, silent connections could be opened until Envoy ran out of descriptors.
    envoy, port = front_envoy_alone(tmp_path, envoy_path, max_connections=3)
    held = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(3)]
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as extra:
            extra.sendall(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n")
            try:
                answer = extra.recv(4096)
            except ConnectionResetError:
                answer = b""
        with held[0] as first:  # one held under the cap is still answered
            first.sendall(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n")
            served = first.recv(4096)
    finally:
        for connection in held:
            connection.close()
        envoy.close()
    assert answer == b""
    assert served.startswith(b"HTTP/1.1 "), served


def authz_http2(bootstrap: dict[str, Any]) -> dict[str, Any]:
    cluster = next(c for c in bootstrap["static_resources"]["clusters"]
                   if c["name"] == "tenantgate")
    options = cluster["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    http2: dict[str, Any] = options["explicit_http_config"]["http2_protocol_options"]
    return http2


@pytest.mark.parametrize("authz", ["10.0.0.7:9001", "tenantgate.auth.svc.cluster.local:9001"])
def test_a_tcp_tenantgate_cluster_pings_so_a_dead_peer_is_dropped(
        example: Config, envoy_path: str, authz: str) -> None:
    """Front mode against a Service: when a node dies without a FIN or RST, the connection is
    half-open and every Check on it waited out the authz timeout (503) until TCP gave up,
    about 15 minutes. An unanswered PING now aborts it."""
    options = EnvoyOptions(mode="front", authz=authz)
    assert authz_http2(bootstrap_dict(example, options)) == {
        "connection_keepalive": {"interval": "10s", "timeout": "2s"}}
    assert "OK" in validated(example, options, envoy_path)


def test_the_unix_socket_cluster_does_not_ping(example: Config) -> None:
    # The kernel resets a Unix socket the moment its peer dies; and gRPC core answers pings on
    # an idle connection with GOAWAY (too_many_pings), so they would only recycle connections.
    assert authz_http2(bootstrap_dict(example, EnvoyOptions(mode="sidecar"))) == {}


def quota_config(directory: Path, rls_text: bytes | None = None,
                 **quota: Any) -> Path:
    """A tenantgate config with quota on (memory store unless `quota` says otherwise) and, with
    `rls_text`, one rate-limit file holding exactly those bytes."""
    config = base_config(directory)
    (directory / "jwks.json").write_text('{"keys": []}')
    config["quota"] = {"enabled": True, "plans": {"standard": {"limits": ["10/s"]}}, **quota}
    if rls_text is not None:
        (directory / "rls.yaml").write_bytes(rls_text)
        config["quota"]["ratelimit_service"] = {"config_files": ["rls.yaml"]}
    path = directory / "tenantgate.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("rls_text, message", [
    # envoy-config read the file with a plain yaml.safe_load: a traceback.
    (b"domain: edge\n# caf\xe9\n", "rls.yaml: cannot read rate-limit config"),
    # serve refuses these; envoy-config rendered a bootstrap for them.
    (b"domain: edge\ndescriptors:\n  - {key: tenant, rate_limit: {unit: fortnight, "
     b"requests_per_unit: 1}}\n", "rls.yaml: descriptors[0].rate_limit.unit"),
    (b"domain: edge\ndomain: other\n", "rls.yaml: line 2 column 1: duplicate key 'domain'"),
    # Envoy's filter cannot send an empty domain: envoy-config left the filter out unsaid.
    (b'domain: ""\ndescriptors: [{key: tenant, rate_limit: {unit: second, '
     b'requests_per_unit: 1}}]\n', "rls.yaml: domain: must not be empty"),
], ids=["not-utf8", "unknown-unit", "duplicate-key", "empty-domain"])
def test_cli_refuses_rate_limit_files_serve_would_refuse(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], rls_text: bytes,
        message: str) -> None:
    config = quota_config(tmp_path, rls_text)
    assert main(["envoy-config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tenantgate: invalid config {config}:\n")
    assert message in err and "Traceback" not in err


def test_cli_refuses_a_registry_plan_that_does_not_exist(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = quota_config(tmp_path)
    text = yaml.safe_load(config.read_text())
    text["tenants"]["registry"]["acme"]["plan"] = "gold"
    config.write_text(yaml.safe_dump(text))
    assert main(["envoy-config", str(config)]) == 2
    assert "gold" in capsys.readouterr().err


REDIS_QUOTA = {"store": "redis", "redis": {"url": "redis://127.0.0.1:6379/0", "timeout": 0.3}}


def test_cli_refuses_an_authz_timeout_shorter_than_the_quota_store_wait(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With quota.redis.timeout 0.3 and --authz-timeout 0.25, Envoy answered 503 before
    tenantgate had decided, whatever quota.failure_mode said."""
    config = quota_config(tmp_path, **REDIS_QUOTA)
    assert main(["envoy-config", str(config), "--authz-timeout", "0.25"]) == 2
    err = capsys.readouterr().err
    assert err == ("tenantgate: --authz-timeout: 0.25 s is not longer than a Check may wait on "
                   "its dependencies (quota.redis.timeout 0.3 s): Envoy would answer 503 before "
                   "tenantgate decides; give more, or lower those timeouts\n")
    assert main(["envoy-config", str(config), "--authz-timeout", "0.31", "-o",
                 str(tmp_path / "envoy.yaml")]) == 0


def test_the_default_authz_timeout_outlasts_the_api_key_and_quota_waits(
        tmp_path: Path, envoy_path: str) -> None:
    """api_keys.redis_timeout (0.25 s by default) alone matched the old fixed 0.25 s."""
    config_path = quota_config(tmp_path, **REDIS_QUOTA)
    text = yaml.safe_load(config_path.read_text())
    text["api_keys"] = {"hash_secret": {"fromFile": "ctx.key"}}
    config_path.write_text(yaml.safe_dump(text))
    config = load_config(config_path)
    bootstrap = bootstrap_dict(config, EnvoyOptions(rate_limit=False))
    authz = http_filter(bootstrap, "envoy.filters.http.ext_authz")
    assert authz["grpc_service"]["timeout"] == "0.650s"  # 0.25 + 0.3 + 0.1 of headroom
    with pytest.raises(EnvoyConfigError, match=r"api_keys.redis_timeout 0.25 s \+ "
                                               r"quota.redis.timeout 0.3 s = 0.55 s"):
        bootstrap_dict(config, EnvoyOptions(authz_timeout=0.5))
    assert "OK" in validated(config, EnvoyOptions(rate_limit=False), envoy_path)


def test_the_default_authz_timeout_is_a_quarter_second_when_nothing_waits_longer(
        example: Config) -> None:
    authz = http_filter(bootstrap_dict(example, EnvoyOptions()), "envoy.filters.http.ext_authz")
    limiter = http_filter(bootstrap_dict(example, EnvoyOptions()), "envoy.filters.http.ratelimit")
    assert authz["grpc_service"]["timeout"] == limiter["timeout"] == "0.250s"


def app_route(bootstrap: dict[str, Any]) -> dict[str, Any]:
    route: dict[str, Any] = (
        http_manager(bootstrap)["route_config"]["virtual_hosts"][0]["routes"][0]["route"])
    return route


@pytest.mark.parametrize("seconds, rendered", [("0", "0s"), ("120", "120s"), ("2.5", "2.500s")])
def test_cli_sets_the_route_timeout_and_0_turns_it_off(
        example: Config, tmp_path: Path, envoy_path: str, seconds: str, rendered: str) -> None:
    out = tmp_path / "envoy.yaml"
    assert main(["envoy-config", str(EXAMPLE_CONFIG), "--route-timeout", seconds,
                 "-o", str(out)]) == 0
    bootstrap = yaml.safe_load(out.read_text())
    assert app_route(bootstrap)["timeout"] == rendered  # 0 written out: unset is Envoy's 15 s
    envoy = EnvoyProcess(out.read_text(), binary=envoy_path)
    try:
        assert "OK" in envoy.validate()
    finally:
        envoy.close()


@pytest.mark.parametrize("seconds", ["-1", "nan", "soon"])
def test_cli_refuses_a_bad_route_timeout_as_a_usage_error(
        capsys: pytest.CaptureFixture[str], seconds: str) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["envoy-config", str(EXAMPLE_CONFIG), "--route-timeout", seconds])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "--route-timeout" in err and "Traceback" not in err


def test_xff_trusted_hops_reach_the_connection_manager(example: Config, envoy_path: str) -> None:
    options = EnvoyOptions(mode="front", authz="10.0.0.7:9001", xff_num_trusted_hops=2)
    manager = http_manager(bootstrap_dict(example, options))
    assert manager["use_remote_address"] is True and manager["xff_num_trusted_hops"] == 2
    assert "xff_num_trusted_hops" not in http_manager(bootstrap_dict(example, EnvoyOptions()))
    assert "OK" in validated(example, options, envoy_path)


def _client_limited(port: int, forwarded_for: str) -> int:
    """The status Envoy gives a request whose load balancer saw `forwarded_for`."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(f"GET /tenants/acme/notes HTTP/1.1\r\nHost: app\r\n"
                       f"x-forwarded-for: 203.0.113.9, {forwarded_for}\r\n"
                       f"Connection: close\r\n\r\n".encode())
        return int(client.recv(4096).split(b" ", 2)[1])


@pytest.mark.parametrize("hops, statuses", [
    # Behind one load balancer: each client address it appended has its own bucket (503: past
    # the limit, Envoy finds no tenantgate behind it, and fails closed).
    (1, [503, 429, 503]),
    # Without: every request comes from the load balancer's address, one bucket for all.
    (0, [503, 429, 429]),
])
def test_behind_a_load_balancer_the_client_limit_counts_the_address_it_saw(
        tmp_path: Path, envoy_path: str, hops: int, statuses: list[int]) -> None:
    envoy, port = front_envoy_alone(tmp_path, envoy_path, client_limit=parse_rate("1/h"),
                                    xff_num_trusted_hops=hops)
    try:
        seen = [_client_limited(port, address)
                for address in ("198.51.100.1", "198.51.100.1", "198.51.100.2")]
    finally:
        envoy.close()
    # 203.0.113.9, left of what the balancer appended, is the client's own claim: never used.
    assert seen == statuses


def test_the_charts_front_mode_command_is_one_envoy_config_accepts(
        example: Config, capsys: pytest.CaptureFixture[str]) -> None:
    # Before: NOTES.txt and the values.yaml comment showed --authz <headless name> without
    # --authz-plaintext, which envoy-config refuses (exit 2) for a name beyond loopback.
    chart = EXAMPLES.parent / "deploy" / "helm" / "tenantgate"
    notes = (chart / "templates" / "NOTES.txt").read_text()
    for template, value in {'{{ include "tenantgate.headlessName" . }}': "tg-tenantgate-headless",
                            "{{ .Release.Namespace }}": "auth",
                            "{{ .Values.ports.grpc }}": "9001"}.items():
        notes = notes.replace(template, value)
    [command] = [line.split() for line in notes.replace("\\\n", " ").splitlines()
                 if "envoy-config config.yaml" in line]
    assert command[:3] == ["tenantgate", "envoy-config", "config.yaml"]
    assert main(["envoy-config", str(EXAMPLE_CONFIG), *command[3:]]) == 0, (
        capsys.readouterr().err)
    values = (chart / "values.yaml").read_text()
    headless_comment = values[:values.index("\n  headless:")].rsplit("\n\n", 1)[1]
    assert "--mode front --authz" in headless_comment
    assert "--authz-plaintext" in headless_comment
