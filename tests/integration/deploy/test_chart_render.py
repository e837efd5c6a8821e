"""The Helm chart over a matrix of values: lint, Kubernetes schemas, the config it renders, pods."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from deploy_support import CHART, VALUES_DIR, Rendered, run_helm
from tenantgate.config.load import load_config
from tenantgate.testing.pki import write_pki

MATRIX = sorted(p.name for p in VALUES_DIR.glob("*.yaml"))
SIDECAR = [name for name in MATRIX if name.startswith("sidecar")]
STANDALONE = [name for name in MATRIX if name.startswith("standalone")]
# The oldest Kubernetes with native sidecars on by default, and the newest schemas we have.
KUBERNETES_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]  # Chart.yaml's oldest
# Environment the matrix's secret references ({fromEnv: ...}) expect.
SECRET_ENV = {name: f"{name.lower()}-" + "x" * 40
              for name in ("PARTNER_HS_SECRET", "APIKEY_HASH_SECRET", "ADMIN_TOKEN")}

# Prometheus Operator kinds have no schema in kubernetes-validate: check the fields we rely on,
# as the operator's CRDs define them.
_PROM_DURATION = re.compile(r"^(0|([0-9]+(ms|s|m|h|d|w|y))+)$")
_OPERATOR_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}


def test_matrix_covers_both_modes_with_and_without_redis_and_metrics() -> None:
    texts = {name: yaml.safe_load((VALUES_DIR / name).read_text()) for name in MATRIX}
    combos = {(v["mode"], v.get("quota", {}).get("store", "memory"),
               v.get("metrics", {}).get("enabled", True)) for v in texts.values()}
    assert {mode for mode, _, _ in combos} == {"standalone", "sidecar"}
    for mode in ("standalone", "sidecar"):
        assert {store for m, store, _ in combos if m == mode} == {"memory", "redis"}, mode
        assert {on for m, _, on in combos if m == mode} == {True, False}, mode


@pytest.mark.parametrize("values", MATRIX)
def test_helm_lint_strict_passes(helm: str, values: str) -> None:
    result = run_helm(helm, "lint", str(CHART), "--strict", "-f", str(VALUES_DIR / values))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_helm_lint_passes_with_the_default_values(helm: str) -> None:
    result = run_helm(helm, "lint", str(CHART), "--strict")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("k8s", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("values", MATRIX)
def test_every_manifest_validates_against_kubernetes_schemas(
        render: Callable[..., Rendered], values: str, k8s: str) -> None:
    rendered = render(values)
    for doc in rendered.docs:
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] in _OPERATOR_KINDS:
            _check_operator_object(doc)
            continue
        try:
            kubernetes_validate.validate(doc, k8s, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{where} invalid for Kubernetes {k8s}: {list(exc.path)}: {exc.message}")


def test_the_schema_validation_is_real(render: Callable[..., Rendered]) -> None:
    """A misspelt field must fail: otherwise the validation test above proves nothing."""
    deployment = render("standalone-minimal.yaml").workload()
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grcp"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


def _check_operator_object(doc: dict[str, Any]) -> None:
    assert doc["apiVersion"] == "monitoring.coreos.com/v1"
    spec = doc["spec"]
    if doc["kind"] == "PrometheusRule":
        for group in spec["groups"]:
            assert set(group) <= {"name", "rules", "interval"} and group["rules"]
            for rule in group["rules"]:
                assert set(rule) <= {"alert", "record", "expr", "for", "labels", "annotations"}
                assert isinstance(rule["expr"], str) and rule["expr"].strip()
                assert _PROM_DURATION.match(str(rule.get("for", "0"))), rule
                for mapping in (rule.get("labels", {}), rule.get("annotations", {})):
                    assert all(isinstance(v, str) for v in mapping.values()), rule
        return
    endpoints = spec["endpoints" if doc["kind"] == "ServiceMonitor" else "podMetricsEndpoints"]
    assert spec["selector"]["matchLabels"] and endpoints
    for endpoint in endpoints:
        assert set(endpoint) <= {"port", "path", "interval"}
        assert _PROM_DURATION.match(endpoint["interval"])


@pytest.mark.parametrize("values", MATRIX)
def test_rendered_config_passes_check_config(
        render: Callable[..., Rendered], values: str, key_dir: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from tenantgate.cli import main

    for name, value in SECRET_ENV.items():
        monkeypatch.setenv(name, value)
    config_file = key_dir / "config.yaml"  # keys/<id> (and tls/) beside it, as in the pod
    config_file.write_text(render(values).config_text())
    if "tls" in yaml.safe_load(config_file.read_text())["listen"]:
        write_tls_files(key_dir)
    exit_code = main(["check-config", str(config_file)])
    out = capsys.readouterr()
    assert exit_code == 0, out.err
    assert ": ok (" in out.out


def test_config_sections_are_copied_from_values_unchanged(
        render: Callable[..., Rendered], key_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRET_ENV.items():
        monkeypatch.setenv(name, value)
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    values = _merged(defaults, yaml.safe_load(
        (VALUES_DIR / "standalone-redis-full.yaml").read_text()))
    rendered = yaml.safe_load(render("standalone-redis-full.yaml").config_text())
    for section in ("issuers", "credentials", "tenants", "policy", "quota", "audit", "api_keys",
                    "admin"):
        assert rendered[section] == values[section], section
    assert rendered["tenants"]["pattern"] == defaults["tenants"]["pattern"]
    assert rendered["context"]["keys"] == [
        {"id": "k1", "secret": {"fromFile": "keys/k1"}},
        {"id": "k2", "secret": {"fromFile": "keys/k2"}}]
    (key_dir / "config.yaml").write_text(yaml.safe_dump(rendered))
    config = load_config(key_dir / "config.yaml")
    assert config.context.active_key == "k2"
    assert config.context.keys[1].secret.value == (key_dir / "keys" / "k2").read_bytes()
    assert config.quota.redis.url == values["quota"]["redis"]["url"]


@pytest.mark.parametrize("host", ["[::]", "::"])
@pytest.mark.parametrize("values", ["standalone-tls.yaml", "sidecar-memory.yaml"])
def test_listen_host_binds_every_port_to_ipv6_too(
        render: Callable[..., Rendered], values: str, host: str, key_dir: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """0.0.0.0 binds IPv4 only: on an IPv6 single-stack cluster kubelet could not probe and
    Prometheus could not scrape. [::] (bracketed, as gRPC reads it) takes both families."""
    from tenantgate.cli import main

    rendered = render(values, sets={"listenHost": host})
    listen = yaml.safe_load(rendered.config_text())["listen"]
    ports = {"grpc": 9001, "metrics": 9090, "health": 9003 if "tls" in listen else None}
    assert {key: listen.get(key) for key in ports} == {
        key: f"[::]:{port}" if port else None for key, port in ports.items()}
    if listen.get("uds"):  # sidecar mode: Envoy's listener too
        args = rendered.pod_spec()["initContainers"][0]["args"]
        assert args[args.index("--listen") + 1] == "[::]:8000"
    (key_dir / "config.yaml").write_text(rendered.config_text())
    if "tls" in listen:
        write_tls_files(key_dir)
    assert main(["check-config", str(key_dir / "config.yaml")]) == 0, capsys.readouterr().err
    for doc in rendered.docs:
        if doc["kind"] not in _OPERATOR_KINDS:
            kubernetes_validate.validate(doc, KUBERNETES_VERSIONS[-1], strict=True)


@pytest.mark.parametrize("values", MATRIX)
def test_listen_host_is_ipv4_by_default(render: Callable[..., Rendered], values: str) -> None:
    """[::] fails to bind on nodes whose kernel has IPv6 disabled: not the default."""
    rendered = render(values)
    listen = yaml.safe_load(rendered.config_text())["listen"]
    assert listen["grpc"] == "0.0.0.0:9001"
    if listen.get("uds"):
        args = rendered.pod_spec()["initContainers"][0]["args"]
        assert args[args.index("--listen") + 1].startswith("0.0.0.0:")


def test_the_config_checksum_changes_with_the_config_and_only_then(
        render: Callable[..., Rendered]) -> None:
    def checksum(sets: dict[str, str]) -> str:
        annotations = render("standalone-minimal.yaml", sets=sets).workload()["spec"]["template"][
            "metadata"]["annotations"]
        return str(annotations["checksum/config"])

    base = checksum({})
    assert re.fullmatch(r"[0-9a-f]{64}", base)
    assert checksum({"replicaCount": "5"}) == base
    assert checksum({"context.ttl": "30s"}) != base
    assert checksum({"tenants.registry.acme.plan": "pro"}) != base


@pytest.mark.parametrize("values", MATRIX)
def test_every_container_runs_locked_down(render: Callable[..., Rendered], values: str) -> None:
    pod = render(values).pod_spec()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    for container in [*pod.get("initContainers", []), *pod["containers"]]:
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True, container["name"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert context["capabilities"]["drop"] == ["ALL"], container["name"]
        assert context["runAsNonRoot"] is True, container["name"]


@pytest.mark.parametrize("values", MATRIX)
def test_tenantgate_has_native_grpc_probes_on_its_grpc_port(
        render: Callable[..., Rendered], values: str) -> None:
    """On the health-only port when the gRPC port speaks TLS only: the probes speak no TLS."""
    rendered = render(values)
    pod = rendered.pod_spec()
    tenantgate = _container(pod, "tenantgate")
    tls = "tls" in yaml.safe_load(rendered.config_text())["listen"]
    probed = next(p["containerPort"] for p in tenantgate["ports"]
                  if p["name"].endswith("health" if tls else "grpc"))
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert tenantgate[probe]["grpc"] == {"port": probed, "service": ""}, probe
    assert "/tmp" in {m["mountPath"] for m in tenantgate["volumeMounts"]}
    assert tenantgate["args"] == ["--config", "/etc/tenantgate/config.yaml"]


@pytest.mark.parametrize("values", STANDALONE)
def test_standalone_service_targets_the_grpc_port_with_its_protocol(
        render: Callable[..., Rendered], values: str) -> None:
    rendered = render(values)
    service = rendered.one("Service")
    grpc = next(p for p in service["spec"]["ports"] if p["name"] == "grpc")
    tls = yaml.safe_load((VALUES_DIR / values).read_text()).get("tls", {}).get("enabled")
    assert grpc["appProtocol"] == ("https" if tls else "grpc")  # test_chart_tls.py says why
    assert grpc["targetPort"] == "grpc"
    selector = service["spec"]["selector"]
    pod_labels = rendered.workload()["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()
    for doc in rendered.docs:
        if doc["kind"] == "ServiceMonitor":
            names = {p["name"] for p in service["spec"]["ports"]}
            assert {e["port"] for e in doc["spec"]["endpoints"]} <= names


def test_standalone_spreads_replicas_and_bounds_disruption(
        render: Callable[..., Rendered]) -> None:
    rendered = render("standalone-minimal.yaml")
    spec = rendered.workload()["spec"]
    assert "replicas" not in spec, "the HPA owns the replica count"
    hpa = rendered.one("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == rendered.workload()["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 2
    assert rendered.one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= \
        spec["template"]["metadata"]["labels"].items()
    anti = spec["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"][
        "topologyKey"] == "kubernetes.io/hostname"
    assert spec["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    hard = render("standalone-redis-full.yaml").workload()["spec"]
    assert hard["replicas"] == 3
    assert "requiredDuringSchedulingIgnoredDuringExecution" in \
        hard["template"]["spec"]["affinity"]["podAntiAffinity"]
    # One replica per node: with as many replicas as nodes a surge pod could never be placed,
    # so the rollout must be free to replace an old pod first.
    assert hard["strategy"]["rollingUpdate"]["maxUnavailable"] == 1


@pytest.mark.parametrize("values", STANDALONE)
def test_standalone_keeps_serving_until_callers_have_moved_away(
        render: Callable[..., Rendered], values: str) -> None:
    """On SIGTERM tenantgate stops taking new RPCs at once (grpc.aio's stop), while the callers'
    Envoys still send to the pod until the endpoint update reaches them: their Checks failed
    and Envoy answered 503 on every rollout or scale-down. The preStop wait comes first."""
    pod = render(values).pod_spec()
    tenantgate = _container(pod, "tenantgate")
    command = tenantgate["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep" and int(command[1]) >= 3
    drain = _drain_seconds(render(values).config_text())
    assert pod["terminationGracePeriodSeconds"] > int(command[1]) + drain


def _drain_seconds(config_text: str) -> float:
    text = str(yaml.safe_load(config_text)["listen"].get("drain_timeout", "10s"))
    return float(text.rstrip("s"))


@pytest.mark.parametrize("values", SIDECAR)
def test_sidecar_mode_runs_tenantgate_and_envoy_as_native_sidecars_in_order(
        render: Callable[..., Rendered], values: str) -> None:
    rendered = render(values)
    pod = rendered.pod_spec()
    init = pod["initContainers"]
    assert [c["name"] for c in init] == ["tenantgate-envoy-config", "tenantgate", "envoy"]
    assert "restartPolicy" not in init[0], "the bootstrap step runs once"
    assert init[1]["restartPolicy"] == init[2]["restartPolicy"] == "Always"
    assert init[0]["args"][:4] == ["envoy-config", "/etc/tenantgate/config.yaml", "--mode",
                                   "sidecar"]
    assert "startupProbe" in init[1] and "startupProbe" in init[2], \
        "the application must start only after both sidecars are up"
    config = yaml.safe_load(rendered.config_text())
    socket_dir = str(Path(config["listen"]["uds"]).parent)
    for container in init[1:]:
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert mounts[socket_dir] == "tenantgate-socket", container["name"]
    bootstrap = init[0]["args"][init[0]["args"].index("--output") + 1]
    envoy_mounts = {m["mountPath"]: m for m in init[2]["volumeMounts"]}
    assert envoy_mounts[str(Path(bootstrap).parent)]["readOnly"] is True
    assert f"-c {bootstrap}" in " ".join(init[2]["args"])
    assert [c["name"] for c in pod["containers"]] != []


@pytest.mark.parametrize("values", SIDECAR)
def test_envoys_admin_is_a_socket_in_a_directory_the_app_container_does_not_mount(
        render: Callable[..., Rendered], values: str) -> None:
    """On 127.0.0.1:9901 the admin shared the app's loopback: an SSRF in the app could POST
    /logging?level=debug (every token logged) or /quitquitquit (docs/envoy.md)."""
    pod = render(values).pod_spec()
    args = pod["initContainers"][0]["args"]
    admin = args[args.index("--admin") + 1]
    assert admin == "unix:/run/tenantgate/envoy-admin.sock"
    admin_dir = str(Path(admin.removeprefix("unix:")).parent)
    envoy_mounts = {m["mountPath"]: m for m in _container(pod, "envoy")["volumeMounts"]}
    assert not envoy_mounts[admin_dir].get("readOnly"), "Envoy creates the socket"
    volume = envoy_mounts[admin_dir]["name"]
    app = pod["containers"][0]
    assert volume not in {m["name"] for m in app.get("volumeMounts", [])}
    assert not [c for c in pod["containers"]
                if any(m["mountPath"] == admin_dir for m in c.get("volumeMounts", []))]


@pytest.mark.parametrize("values", SIDECAR)
def test_the_sidecar_app_keeps_serving_while_callers_leave_and_gets_no_probe_that_cannot_pass(
        render: Callable[..., Rendered], values: str) -> None:
    """Without a preStop the app got SIGTERM at once while Envoy still took traffic for it. A
    default tcpSocket readiness check on the app's port never passed: kubelet probes the pod
    IP and the app listens on loopback, so no pod was ever Ready (the probe is the user's)."""
    rendered = render(values)
    app = rendered.pod_spec()["containers"][0]
    assert "readinessProbe" not in app
    assert app["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}
    grace = rendered.pod_spec()["terminationGracePeriodSeconds"]
    assert grace > 5 + _drain_seconds(rendered.config_text())


@pytest.mark.parametrize("probe", ["readinessProbe", "livenessProbe", "startupProbe"])
def test_the_schema_describes_the_sidecar_apps_probes_as_rendered(
        render: Callable[..., Rendered], probe: str) -> None:
    """The schema said {} was a tcpSocket check on sidecar.app.port; the chart renders none."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    description = schema["properties"]["sidecar"]["properties"]["app"]["properties"][probe][
        "description"]
    assert "passed through" in description and "tcpSocket" not in description
    app = render("sidecar-redis.yaml").pod_spec()["containers"][0]
    assert probe not in app
    if "{} =" in description:
        assert "{} = none" in description


@pytest.mark.parametrize("values", MATRIX)
def test_priority_class_name_reaches_the_pod_in_both_modes(
        render: Callable[..., Rendered], values: str) -> None:
    pod = render(values, sets={"priorityClassName": "tenant-critical"}).pod_spec()
    assert pod["priorityClassName"] == "tenant-critical"
    assert "priorityClassName" not in render(values).pod_spec()


def test_the_sidecar_apps_probes_and_lifecycle_are_passed_through(
        render: Callable[..., Rendered], tmp_path: Path) -> None:
    probe = {"httpGet": {"path": "/healthz", "port": 3000}, "periodSeconds": 3}
    lifecycle = {"preStop": {"exec": {"command": ["/app/drain"]}}}
    values = tmp_path / "app.yaml"
    values.write_text(yaml.safe_dump({"sidecar": {"app": {
        "readinessProbe": probe, "livenessProbe": probe, "startupProbe": probe,
        "lifecycle": lifecycle}}}))
    app = render("sidecar-redis.yaml", str(values)).pod_spec()["containers"][0]
    assert app["readinessProbe"] == app["livenessProbe"] == app["startupProbe"] == probe
    assert app["lifecycle"] == lifecycle
    off = render("sidecar-redis.yaml", sets={"preStopSleepSeconds": "0"}).pod_spec()
    assert "lifecycle" not in off["containers"][0]


@pytest.mark.parametrize("values", SIDECAR)
def test_sidecar_traffic_reaches_the_app_only_through_envoy(
        render: Callable[..., Rendered], values: str) -> None:
    rendered = render(values)
    pod = rendered.pod_spec()
    envoy = _container(pod, "envoy")
    envoy_port = next(p["containerPort"] for p in envoy["ports"] if p["name"] == "envoy-http")
    service = rendered.one("Service")
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["envoy-http"]
    policy = rendered.one("NetworkPolicy")
    admitted = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    app_port = pod["containers"][0]["ports"][0]["containerPort"]
    assert envoy_port in admitted and app_port not in admitted
    tenantgate_grpc = next(p["containerPort"] for p in _container(pod, "tenantgate")["ports"]
                           if p["name"] == "tg-grpc")
    assert tenantgate_grpc not in admitted, "Envoy uses the UDS; only kubelet probes use TCP"
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= \
        rendered.workload()["spec"]["template"]["metadata"]["labels"].items()
    names = [p["name"] for c in [*pod["initContainers"], *pod["containers"]]
             for p in c.get("ports", [])]
    assert len(names) == len(set(names)), f"port names must be unique in a pod: {names}"
    monitors = [doc for doc in rendered.docs if doc["kind"] == "PodMonitor"]
    metrics = yaml.safe_load((VALUES_DIR / values).read_text()).get("metrics", {})
    wanted = metrics.get("enabled", True) and metrics.get("serviceMonitor", {}).get("enabled")
    assert len(monitors) == (1 if wanted else 0)
    for doc in monitors:
        assert {e["port"] for e in doc["spec"]["podMetricsEndpoints"]} <= set(names)


def test_tenantgates_own_ports_admit_only_pods_of_the_cluster_unless_listed(
        render: Callable[..., Rendered]) -> None:
    # A rule without `from` admits every source, addresses outside the cluster included: with
    # a LoadBalancer Service, the gRPC port (ShouldRateLimit spends any tenant's quota) and
    # /metrics would be public.
    ingress = render("standalone-minimal.yaml").one("NetworkPolicy")["spec"]["ingress"]
    assert [rule.get("from") for rule in ingress] == [[{"namespaceSelector": {}}]] * 2
    listed = render("standalone-redis-full.yaml").one("NetworkPolicy")["spec"]["ingress"]
    assert [rule["from"][0]["namespaceSelector"]["matchLabels"] for rule in listed] == [
        {"kubernetes.io/metadata.name": "istio-system"},
        {"kubernetes.io/metadata.name": "monitoring"}]
    # Sidecar mode: Envoy's port is the app's own entrance, which may be public.
    sidecar = render("sidecar-redis.yaml").one("NetworkPolicy")["spec"]["ingress"]
    assert "from" not in sidecar[0]


def test_restricted_egress_still_allows_dns_and_the_listed_rules(
        render: Callable[..., Rendered]) -> None:
    policy = render("standalone-redis-full.yaml").one("NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    egress = policy["spec"]["egress"]
    assert {"port": 53, "protocol": "UDP"} in egress[0]["ports"]
    assert any(p["port"] == 6379 for rule in egress[1:] for p in rule.get("ports", []))
    assert render("standalone-minimal.yaml").one("NetworkPolicy")["spec"]["policyTypes"] == \
        ["Ingress"]


def test_metrics_off_removes_the_port_and_every_monitoring_object(
        render: Callable[..., Rendered]) -> None:
    rendered = render("standalone-no-metrics.yaml")
    assert rendered.kinds() == ["ConfigMap", "Deployment", "Service"]
    assert yaml.safe_load(rendered.config_text())["listen"]["metrics"] is None
    assert [p["name"] for p in rendered.one("Service")["spec"]["ports"]] == ["grpc"]


@pytest.mark.parametrize("values", MATRIX)
def test_notes_render(render_notes: Callable[..., str], values: str) -> None:
    notes = render_notes(values)
    assert "kubectl -n auth create secret generic" in notes
    assert "<no value>" not in notes
    mode = yaml.safe_load((VALUES_DIR / values).read_text())["mode"]
    assert f"in {mode} mode" in notes


def write_tls_files(config_dir: Path) -> Path:
    """The tls Secret's items where the chart mounts them, beside the config (tls/tls.crt,
    tls/tls.key, tls/ca.crt); returns the directory of the PKI that issued them."""
    pki = config_dir / "pki"
    pki.mkdir()
    write_pki(pki)
    (config_dir / "tls").mkdir()
    for item, issued in {"tls.crt": "server.crt", "tls.key": "server.key",
                         "ca.crt": "ca.crt"}.items():
        shutil.copyfile(pki / issued, config_dir / "tls" / item)
    return pki


@pytest.mark.parametrize("client_auth", [True, False], ids=["mutual-tls", "tls"])
def test_the_notes_tls_front_mode_command_is_one_envoy_config_accepts(
        render_notes: Callable[..., str], render: Callable[..., Rendered], key_dir: Path,
        tmp_path: Path, client_auth: bool, capsys: pytest.CaptureFixture[str]) -> None:
    """With tls.enabled the command NOTES prints calls the pods over TLS, not plaintext, and
    runs as printed once its placeholder files exist."""
    from tenantgate.cli import main

    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"tls": {"clientAuth": client_auth},
                                      "service": {"headless": True}}))
    notes = render_notes("standalone-tls.yaml", str(values))
    assert "--authz-plaintext" not in notes
    assert "the plaintext health-only port 9003" in notes
    [command] = [line.split() for line in notes.replace("\\\n", " ").splitlines()
                 if "tenantgate envoy-config" in line]
    assert command[:2] == ["tenantgate", "envoy-config"] and command[-1] == "config.yaml"
    assert ("--authz-tls-cert" in command) is client_auth
    # The config the chart renders, and files where the command has placeholders.
    (key_dir / "config.yaml").write_text(
        render("standalone-tls.yaml", str(values)).config_text())
    pki = write_tls_files(key_dir)
    # The Secret volume is read-only and envoy-config writes its SDS files beside --output:
    # the command must write elsewhere (one directory for both failed in a real pod).
    flags = dict(zip(command[2::2], command[3::2], strict=False))
    tls_dirs = {Path(flags[flag]).parent for flag in flags if flag.startswith("--authz-tls-")}
    assert Path(flags["--output"]).parent not in tls_dirs
    # A cert-manager volume's names, with the files the test's CA issued.
    volume = tmp_path / "secret"
    volume.mkdir()
    for name, source in (("ca.crt", "ca.crt"), ("tls.crt", "client.crt"),
                         ("tls.key", "client.key")):
        (volume / name).write_bytes((pki / source).read_bytes())
    secret_files = sorted(volume.iterdir())  # the volume is read-only: nothing may appear
    arguments = [arg.replace("/etc/envoy/tls", str(volume))
                 .replace("/etc/envoy/bootstrap", str(tmp_path / "envoy"))
                 .replace("config.yaml", str(key_dir / "config.yaml"))
                 if arg.startswith("/etc/envoy/") or arg == "config.yaml" else arg
                 for arg in command[2:]]
    assert "tg-tenantgate-headless.auth.svc.cluster.local:9001" in arguments
    (tmp_path / "envoy").mkdir()
    assert main(["envoy-config", *arguments]) == 0, capsys.readouterr().err
    assert sorted(volume.iterdir()) == secret_files
    bootstrap = (tmp_path / "envoy" / "envoy.yaml").read_text()
    assert "envoy.transport_sockets.tls" in bootstrap


def _merged(base: Any, override: Any) -> Any:
    """Helm's merge of values files: maps merge key by key, anything else is replaced."""
    if not (isinstance(base, dict) and isinstance(override, dict)):
        return override
    out = dict(base)
    for key, value in override.items():
        out[key] = _merged(base[key], value) if key in base else value
    return out


def _container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    found = [c for c in [*pod.get("initContainers", []), *pod["containers"]] if c["name"] == name]
    assert len(found) == 1, name
    return found[0]


def test_documented_sidecar_example_is_what_the_chart_renders(helm: str) -> None:
    examples = CHART.parents[1] / "examples"
    result = run_helm(helm, "template", "orders", str(CHART), "-n", "orders", "-f",
                      str(examples / "sidecar-values.yaml"))
    assert result.returncode == 0, result.stderr
    documented = (examples / "sidecar-app.yaml").read_text()
    assert documented.split("\n", 2)[2] == result.stdout, (
        "deploy/examples/sidecar-app.yaml is stale: regenerate it with the command in its header")


def test_secret_env_names_and_keys_stay_strings(
        render: Callable[..., Rendered], tmp_path: Path) -> None:
    # A Secret item named like a number ("0123") must reach Kubernetes as that string, not 123.
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"secretEnv": [
        {"name": "PARTNER_HS_SECRET", "secretName": "partner-idp", "key": "0123"}]}))
    env = render("standalone-minimal.yaml", str(values)).pod_spec()["containers"][0]["env"]
    refs = [item["valueFrom"]["secretKeyRef"] for item in env if "valueFrom" in item]
    assert refs == [{"name": "partner-idp", "key": "0123"}]


def test_a_redis_user_without_a_password_in_the_url_is_accepted(
        render: Callable[..., Rendered]) -> None:
    # An ACL user name is no secret; only a password in the URL is refused.
    rendered = render("standalone-redis-full.yaml",
                      sets={"quota.redis.url": "redis://tenantgate@redis:6379/0"})
    assert "redis://tenantgate@redis:6379/0" in rendered.config_text()


def test_a_headless_service_lets_front_envoys_balance_over_every_pod(
        render: Callable[..., Rendered], helm: str, notes_chart: Path) -> None:
    """Through the ClusterIP, each front Envoy worker's one HTTP/2 connection (and so every
    Check it sends) stays on the pod it first reached; the headless name resolves every pod."""
    assert [d["metadata"]["name"] for d in render("standalone-minimal.yaml").docs
            if d["kind"] == "Service"] == ["tg-tenantgate"]
    rendered = render("standalone-minimal.yaml", sets={"service.headless": "true"})
    cluster_ip = rendered.one("Service", "tenantgate")
    headless = rendered.one("Service", "-headless")
    assert headless["metadata"]["name"] == "tg-tenantgate-headless"
    assert headless["spec"]["clusterIP"] == "None"
    assert "publishNotReadyAddresses" not in headless["spec"], "only ready pods get Checks"
    assert headless["spec"]["selector"] == cluster_ip["spec"]["selector"]
    assert headless["spec"]["ports"] == [
        {"name": "grpc", "port": 9001, "targetPort": "grpc", "protocol": "TCP",
         "appProtocol": "grpc"}]
    kubernetes_validate.validate(headless, kubernetes_validate.latest_version(), strict=True)
    assert not [d for d in render("sidecar-redis.yaml", sets={"service.headless": "true"}).docs
                if d["metadata"]["name"].endswith("-headless")]
    result = run_helm(helm, "template", "tg", str(notes_chart), "--namespace", "auth",
                      "--show-only", "templates/zz-notes.yaml", "--set", "service.headless=true")
    assert result.returncode == 0, result.stderr
    assert "tg-tenantgate-headless.auth.svc.cluster.local:9001" in \
        yaml.safe_load(result.stdout)["data"]["notes"]


def test_the_headless_service_name_fits_kubernetes_with_a_long_release_name(
        helm: str, notes_chart: Path) -> None:
    """The full name is cut at 63 characters, and "-headless" came after it: a 50-character
    release name made a 70-character Service name, which the API server refuses."""
    release = "payments-" + "x" * 41
    args = ["--namespace", "auth", "--set", "service.headless=true",
            "-f", str(VALUES_DIR / "standalone-minimal.yaml")]
    result = run_helm(helm, "template", release, str(CHART), *args)
    assert result.returncode == 0, result.stderr
    names = [d["metadata"]["name"] for d in yaml.safe_load_all(result.stdout)
             if d and d["kind"] == "Service"]
    [headless] = [name for name in names if name.endswith("-headless")]
    assert len(headless) <= 63 and re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", headless)
    assert headless.removesuffix("-headless") in names[0]
    notes = run_helm(helm, "template", release, str(notes_chart), *args,
                     "--show-only", "templates/zz-notes.yaml")
    notes_text = yaml.safe_load(notes.stdout)["data"]["notes"]
    assert f"{headless}.auth.svc.cluster.local:9001" in notes_text


def test_the_sidecar_apps_pods_have_a_disruption_budget(
        render: Callable[..., Rendered]) -> None:
    """sidecar.app.replicas is 2 by default and only standalone mode had a budget: a node
    drain could evict every application pod, tenantgate and Envoy with them, at once."""
    rendered = render("sidecar-redis.yaml")
    budget = rendered.one("PodDisruptionBudget")
    app = rendered.workload()
    assert budget["metadata"]["name"] == app["metadata"]["name"]
    assert budget["spec"]["selector"] == app["spec"]["selector"]
    assert budget["spec"]["maxUnavailable"] == 1
    kubernetes_validate.validate(budget, kubernetes_validate.latest_version(), strict=True)
    for sets in ({"sidecar.app.replicas": "1"}, {"podDisruptionBudget.enabled": "false"},
                 {"sidecar.app.enabled": "false"}):
        assert "PodDisruptionBudget" not in render("sidecar-redis.yaml", sets=sets).kinds(), sets


def test_sidecar_envoy_runs_as_many_workers_as_configured(
        render: Callable[..., Rendered], render_error: Callable[..., str]) -> None:
    """Without --concurrency Envoy starts a worker per hardware thread of the node, whatever
    the container's CPU limit."""
    def concurrency(rendered: Rendered) -> str:
        args = _container(rendered.pod_spec(), "envoy")["args"]
        return str(args[args.index("--concurrency") + 1])

    assert concurrency(render("sidecar-redis.yaml")) == "2"
    assert concurrency(render("sidecar-redis.yaml",
                              sets={"sidecar.envoy.concurrency": "4"})) == "4"
    assert "concurrency" in render_error("sidecar-redis.yaml",
                                         sets={"sidecar.envoy.concurrency": "0"})


def test_restricted_egress_in_sidecar_mode_covers_the_application_and_says_so(
        render: Callable[..., Rendered]) -> None:
    rendered = render("sidecar-redis.yaml")  # restrictEgress: true
    policy = rendered.one("NetworkPolicy")
    assert "Egress" in policy["spec"]["policyTypes"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= \
        rendered.workload()["spec"]["template"]["metadata"]["labels"].items()
    values = (CHART / "values.yaml").read_text()
    above = values[:values.index("\n  restrictEgress:")].splitlines()
    comment = " ".join(line.strip(" #") for line in above[-3:])
    assert "the application's own egress is cut too" in comment
    readme = " ".join((CHART.parents[1] / "README.md").read_text().split())
    assert "`restrictEgress` cuts the application's own egress too" in readme
