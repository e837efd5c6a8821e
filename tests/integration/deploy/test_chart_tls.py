"""The chart's tls values: the gRPC port served over TLS from a mounted Secret (listen.tls),
Kubernetes' gRPC probes moved to the plaintext health-only port (listen.health), and Istio told
the port is TLS. The matrix tests (test_chart_render.py) run standalone-tls.yaml too: schemas,
check-config, NOTES; the values it refuses are in test_chart_values.py's REJECTED."""

from __future__ import annotations

from collections.abc import Callable
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


def grpc_ports(rendered: Rendered) -> list[dict[str, Any]]:
    """The gRPC port of the Service and of the headless Service."""
    services = (rendered.one("Service", "tenantgate"), rendered.one("Service", "-headless"))
    return [p for service in services for p in service["spec"]["ports"] if p["name"] == "grpc"]


def test_tls_grpc_ports_tell_istio_they_speak_tls(render: Callable[..., Rendered]) -> None:
    # Istio takes appProtocol grpc as plaintext HTTP/2: a sidecar on either side would parse
    # the TLS as HTTP/2 and fail every call. https is TLS it passes on unread.
    port = {"name": "grpc", "port": 9001, "targetPort": "grpc", "protocol": "TCP"}
    rendered = render(TLS_VALUES, sets={"service.headless": "true"})
    assert grpc_ports(rendered) == [{**port, "appProtocol": "https"}] * 2
    plaintext = render("standalone-minimal.yaml", sets={"service.headless": "true"})
    assert grpc_ports(plaintext) == [{**port, "appProtocol": "grpc"}] * 2


@pytest.mark.parametrize("client_auth", [True, False], ids=["mutual-tls", "tls"])
def test_tls_notes_have_istio_callers_originate_tls(
        render_notes: Callable[..., str], client_auth: bool) -> None:
    # deploy/istio/'s extension provider and rate-limit filter speak plaintext gRPC: told to
    # register them as they are, a TLS release answered every request with 503.
    notes = render_notes(TLS_VALUES, sets={"tls.clientAuth": str(client_auth).lower()})
    said = " ".join(notes.split())
    assert "register it as an extension provider" not in said
    assert "under Istio, install a release with tls.enabled off" in said
    assert "DestinationRule for tg-tenantgate.auth.svc.cluster.local" in said
    assert "under portLevelSettings for port 9001 only" in said
    assert ("tls.mode MUTUAL" in said) is client_auth
    assert ("tls.mode SIMPLE" in said) is not client_auth
    # Without them Istio checks the certificate against each call's authority.
    assert "sni and subjectAltNames set to a DNS name the certificate holds" in said
    assert "connectionPool.http.h2UpgradePolicy UPGRADE" in said


def test_without_tls_the_notes_register_the_istio_provider_as_before(
        render_notes: Callable[..., str]) -> None:
    notes = render_notes("standalone-minimal.yaml")
    assert ("   (gRPC, HTTP/2)\n\n"
            "   With Istio, register it as an extension provider and use an AuthorizationPolicy "
            "with\n   action CUSTOM: deploy/istio/ in the tenantgate repository has the "
            "manifests.\n   A front Envoy") in notes
    assert "DestinationRule" not in notes


def test_a_health_port_clash_is_no_concern_while_tls_is_off(
        render: Callable[..., Rendered]) -> None:
    # The listener exists only with tls.enabled: ports.health names no port of the pod then.
    assert "Deployment" in render("standalone-minimal.yaml",
                                  sets={"ports.health": "9090"}).kinds()
