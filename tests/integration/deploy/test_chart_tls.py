"""The chart's tls values: the gRPC port served over TLS from a mounted Secret (listen.tls),
and Kubernetes' gRPC probes moved to the plaintext health-only port (listen.health). The matrix
tests (test_chart_render.py) run standalone-tls.yaml too: schemas, check-config, NOTES."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
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


@pytest.mark.parametrize(("values", "message"), [
    pytest.param({"tls": {"enabled": True}},
                 "tls.existingSecret: name the Secret holding the certificate (tls.crt, tls.key, "
                 "and ca.crt with tls.clientAuth)", id="no-secret"),
    pytest.param({"mode": "sidecar", "sidecar": {"app": {"image": "a:1"}},
                  "tls": {"enabled": True, "existingSecret": "tg-tls"}},
                 "tls.enabled: sidecar mode's Envoy calls tenantgate over the Unix socket "
                 "listen.uds", id="sidecar-mode"),
    pytest.param({"tls": {"enabled": True, "existingSecret": "TLS_Secret"}},
                 "- tls.existingSecret: Does not match pattern", id="bad-secret-name"),
    pytest.param({"tls": {"enabled": "yes"}},
                 "- tls.enabled: Invalid type. Expected: boolean, given: string",
                 id="enabled-not-a-switch"),
    pytest.param({"tls": {"enabled": True, "existingSecret": "tg-tls", "caSecret": "x"}},
                 "- tls: Additional property caSecret is not allowed", id="unknown-tls-key"),
    pytest.param({"ports": {"health": 0}},
                 "- ports.health: Must be greater than or equal to 1", id="health-port-zero"),
    pytest.param({"tls": {"enabled": True, "existingSecret": "tg-tls"},
                  "ports": {"health": 9001}},
                 "ports.health: must differ from ports.grpc, both 9001", id="health-on-grpc"),
    pytest.param({"tls": {"enabled": True, "existingSecret": "tg-tls"},
                  "ports": {"health": 9090}},
                 "ports.health: must differ from ports.metrics, both 9090",
                 id="health-on-metrics"),
    pytest.param({"tls": {"enabled": True, "existingSecret": "tg-tls"},
                  "admin": {"listen": "127.0.0.1:9003", "token": {"fromEnv": "T"}}},
                 'admin.listen "127.0.0.1:9003": must differ from ports.health, both 9003',
                 id="admin-on-health"),
    # The chart sets both from tls and ports: written in listen, they would be overwritten.
    pytest.param({"listen": {"health": "0.0.0.0:9003"}},
                 "- listen: Additional property health is not allowed", id="listen-health"),
    pytest.param({"listen": {"tls": {"cert": "a", "key": "b"}}},
                 "- listen: Additional property tls is not allowed", id="listen-tls"),
])
def test_wrong_tls_values_are_refused_with_a_readable_message(
        render_error: Callable[..., str], tmp_path: Path, values: dict[str, Any],
        message: str) -> None:
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    error = render_error(str(values_file))
    assert message in error
    assert "goroutine" not in error and "panic" not in error


def test_a_health_port_clash_is_no_concern_while_tls_is_off(
        render: Callable[..., Rendered]) -> None:
    # The listener exists only with tls.enabled: ports.health names no port of the pod then.
    assert "Deployment" in render("standalone-minimal.yaml",
                                  sets={"ports.health": "9090"}).kinds()
