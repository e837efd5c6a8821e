"""The chart's tls values: the gRPC port served over TLS from a mounted Secret (listen.tls),
and Kubernetes' gRPC probes moved to the plaintext health-only port (listen.health). The matrix
tests (test_chart_render.py) run standalone-tls.yaml too: schemas, check-config, NOTES; the
values it refuses are in test_chart_values.py's REJECTED."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import yaml
from deploy_support import Rendered

TLS_VALUES = "standalone-tls.yaml"  # tls.enabled with clientAuth
HEALTH_PORT = 9003  # ports.health's default


def tenantgate(rendered: Rendered) -> dict[str, Any]:
    [container] = [c for c in rendered.pod_spec()["containers"] if c["name"] == "tenantgate"]
    return container


def listen(rendered: Rendered) -> dict[str, Any]:
    return dict(yaml.safe_load(rendered.config_text())["listen"])


def test_tls_serves_the_secret_as_listen_tls_and_probes_the_health_port(
        render: Callable[..., Rendered]) -> None:
    rendered = render(TLS_VALUES)
    assert listen(rendered)["tls"] == {"cert": "tls/tls.crt", "key": "tls/tls.key",
                                       "client_ca": "tls/ca.crt"}
    assert listen(rendered)["health"] == f"0.0.0.0:{HEALTH_PORT}"
    container = tenantgate(rendered)
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["grpc"] == {"port": HEALTH_PORT, "service": ""}, probe
    assert {"name": "health", "containerPort": HEALTH_PORT, "protocol": "TCP"} in \
        container["ports"]
    # The Secret's items beside the config, in the read-only projected volume: relative paths
    # in the config, and kubelet renews them in place (never a subPath mount).
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    config_mount = mounts["/etc/tenantgate"]
    assert config_mount["readOnly"] is True and "subPath" not in config_mount
    [volume] = [v for v in rendered.pod_spec()["volumes"] if v["name"] == config_mount["name"]]
    secrets = [s["secret"] for s in volume["projected"]["sources"] if "secret" in s]
    assert {"name": "tenantgate-tls", "items": [
        {"key": "tls.crt", "path": "tls/tls.crt"}, {"key": "tls.key", "path": "tls/tls.key"},
        {"key": "ca.crt", "path": "tls/ca.crt"}]} in secrets
    # Plaintext, so reachable by kubelet only: no Service port, no NetworkPolicy rule.
    headless = render(TLS_VALUES, sets={"service.headless": "true"})
    for service in (rendered.one("Service"), headless.one("Service", "-headless")):
        assert HEALTH_PORT not in {p["port"] for p in service["spec"]["ports"]}
    policy = rendered.one("NetworkPolicy")["spec"]["ingress"]
    assert HEALTH_PORT not in {p["port"] for rule in policy for p in rule["ports"]}


def test_without_client_auth_no_ca_is_mounted_or_required(
        render: Callable[..., Rendered]) -> None:
    rendered = render(TLS_VALUES, sets={"tls.clientAuth": "false", "ports.health": "9100"})
    assert listen(rendered)["tls"] == {"cert": "tls/tls.crt", "key": "tls/tls.key"}
    assert listen(rendered)["health"] == "0.0.0.0:9100"
    assert tenantgate(rendered)["readinessProbe"]["grpc"]["port"] == 9100
    assert "ca.crt" not in str(rendered.pod_spec()["volumes"])


def test_without_tls_nothing_changes(render: Callable[..., Rendered]) -> None:
    rendered = render("standalone-minimal.yaml")
    assert "tls" not in listen(rendered) and "health" not in listen(rendered)
    container = tenantgate(rendered)
    assert container["readinessProbe"]["grpc"]["port"] == 9001
    assert "health" not in {p["name"] for p in container["ports"]}


def test_a_health_port_clash_is_no_concern_while_tls_is_off(
        render: Callable[..., Rendered]) -> None:
    # The listener exists only with tls.enabled: ports.health names no port of the pod then.
    assert "Deployment" in render("standalone-minimal.yaml",
                                  sets={"ports.health": "9090"}).kinds()
