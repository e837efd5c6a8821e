"""What the chart's NOTES tell the user to run or to write, run or rendered as printed."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from deploy_support import render_parent_chart

# A stand-in for kubectl holding one namespace's Secrets in a JSON file: `create secret generic`
# (refused when the Secret exists, or printed with --dry-run=client -o yaml), `apply -f -`
# (replaces it) and `patch secret --type merge` (stringData merged into data), as the API server
# does them.
FAKE_KUBECTL = """\
import base64, json, pathlib, sys
import yaml
store = pathlib.Path(sys.argv[0]).with_name("secrets.json")
secrets = json.loads(store.read_text()) if store.exists() else {}
args = sys.argv[1:]
if args[:2] == ["-n", "auth"]:
    args = args[2:]
def save():
    store.write_text(json.dumps(secrets))
if args[:3] == ["create", "secret", "generic"]:
    name = args[3]
    data = dict(a.removeprefix("--from-literal=").split("=", 1)
                for a in args[4:] if a.startswith("--from-literal="))
    if "--dry-run=client" in args:
        print(yaml.safe_dump({"apiVersion": "v1", "kind": "Secret",
                              "metadata": {"name": name}, "stringData": data}))
        sys.exit(0)
    if name in secrets:
        sys.exit(f'Error from server (AlreadyExists): secrets "{name}" already exists')
    secrets[name] = data
elif args[:2] == ["apply", "-f"]:
    doc = yaml.safe_load(sys.stdin)
    secrets[doc["metadata"]["name"]] = doc["stringData"]
elif args[:2] == ["patch", "secret"] and args[3:5] == ["--type", "merge"]:
    secrets[args[2]].update(json.loads(args[args.index("-p") + 1])["stringData"])
else:
    sys.exit(f"fake kubectl: unexpected {args}")
save()
"""


def _commands(notes: str) -> list[str]:
    """The kubectl commands NOTES print, each joined from its continuation lines."""
    return [line.strip() for line in notes.replace("\\\n", " ").splitlines()
            if line.strip().startswith("kubectl") and "secret" in line]


def _run(command: str, bin_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=env,
                          check=False, timeout=60)


@pytest.fixture
def kubectl(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "kubectl"
    script.write_text(f"#!{sys.executable}\n{FAKE_KUBECTL}")
    script.chmod(0o755)
    return bin_dir


def test_the_signing_key_commands_never_regenerate_a_key_in_use(
        render_notes: Callable[..., str], kubectl: Path) -> None:
    """Helm prints NOTES after every upgrade. A create piped through apply, run again during the
    documented rotation (a second id added, rolled), gave the active key a new value: every
    backend and Postgres then failed to verify the contexts tenantgate signed."""
    create = _commands(render_notes("standalone-minimal.yaml"))[0]
    assert _run(create, kubectl).returncode == 0
    secrets = kubectl / "secrets.json"
    [first] = yaml.safe_load(secrets.read_text()).values()
    assert set(first) == {"k1"} and len(first["k1"]) == 64

    # The rotation's first upgrade: k2 listed; the user runs what NOTES print.
    rotating = render_notes("standalone-minimal.yaml", sets={"signingKeys.keyIds": "{k1,k2}"})
    create, *rest = _commands(rotating)
    again = _run(create, kubectl)
    [after] = yaml.safe_load(secrets.read_text()).values()
    assert after == first, "the active key must keep its value"
    assert again.returncode != 0 and "AlreadyExists" in again.stderr
    [patch] = rest
    assert "k3" in patch and "k1" not in patch and "k2" not in patch
    assert _run(patch, kubectl).returncode == 0, "the patch adds the next id, k3"
    [after] = yaml.safe_load(secrets.read_text()).values()
    assert after["k1"] == first["k1"] and set(after) == {"k1", "k3"}
    assert len(after["k3"]) == 64
    assert "--dry-run" not in rotating and "apply" not in rotating

def test_the_rotation_gives_postgres_the_key_first_and_waits_the_context_ttl(
        render_notes: Callable[..., str]) -> None:
    """The steps rolled the new active key before Postgres accepted it (every tenant's queries
    then saw no rows) and removed the old id without waiting for its contexts to expire."""
    notes = " ".join(render_notes("standalone-minimal.yaml",
                                  sets={"context.ttl": "90s"}).split())
    order = [notes.index(step) for step in (
        "tenantgate db add-key k2, not --pending", "add k2 to signingKeys.keyIds and roll",
        "set context.active_key to it and roll",
        "rollout has completed and context.ttl (90s) has passed, remove the old id")]
    assert order == sorted(order)


@pytest.mark.parametrize(("key_ids", "suggested"), [
    ("{k1}", "k2"), ("{k2}", "k3"), ("{k1,k7,k3}", "k8"), ("{primary}", "k2"),
    ("{primary,k1}", "k3")])
def test_the_rotation_suggests_an_id_above_every_listed_one(
        render_notes: Callable[..., str], key_ids: str, suggested: str) -> None:
    """k1 after a rotation to k2 may still sit in the Secret (and in Postgres): never offered."""
    notes = render_notes("standalone-minimal.yaml", sets={
        "signingKeys.keyIds": key_ids, "context.active_key": key_ids.strip("{}").split(",")[0]})
    patch = _commands(notes)[-1]
    assert f'"stringData":{{"{suggested}":' in patch


def test_without_the_app_the_notes_show_how_to_add_the_sidecars_and_the_snippet_renders(
        render_notes: Callable[..., str], helm: str, tmp_path: Path) -> None:
    """With sidecar.app.enabled false the NOTES described an app Deployment and Service the
    chart had not rendered. They now print the named templates' use: pasted into a parent
    chart's Deployment, it renders a valid pod with both sidecars."""
    notes = render_notes("sidecar-memory.yaml", sets={"sidecar.app.enabled": "false"})
    assert "tg-tenantgate-orders" not in notes and "Its Service sends" not in notes
    lines = notes.splitlines()
    start = next(i for i, line in enumerate(lines) if "{{- $tg := dict" in line)
    end = next(i for i, line in enumerate(lines) if "tenantgate.sidecar.volumes" in line)
    snippet = "\n".join(line[5:] for line in lines[start:end + 1])
    assert "envoy-http" in notes and "127.0.0.1:8080" in snippet
    app = "[{name: orders, image: registry.example.com/orders:1.4.2}]"
    template = snippet.replace("[...]", app).replace(
        "\nspec:\n", "\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: orders}\nspec:\n"
        "  selector: {matchLabels: {app: orders}}\n", 1).replace(
        "    metadata:\n", "    metadata:\n      labels: {app: orders}\n", 1)

    result = render_parent_chart(
        helm, tmp_path, "orders", "tenantgate: {mode: sidecar, sidecar: {app: {enabled: false}}}\n",
        template)
    assert result.returncode == 0, result.stderr + template
    [deployment] = [d for d in yaml.safe_load_all(result.stdout) if d and d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == [
        "tenantgate-envoy-config", "tenantgate", "envoy"]
    kubernetes_validate.validate(deployment, kubernetes_validate.latest_version(), strict=True)


def test_without_the_app_an_http2_upstream_asks_for_appprotocol_on_your_service(
        render_notes: Callable[..., str]) -> None:
    # The chart sets appProtocol http2 only on the Service it renders; a Service of your own
    # left at http has a mesh carry gRPC to Envoy as HTTP/1.1.
    sets = {"sidecar.app.enabled": "false"}
    assert "appProtocol: http2" not in render_notes("sidecar-memory.yaml", sets=sets)
    notes = render_notes("sidecar-memory.yaml",
                         sets={**sets, "sidecar.envoy.upstreamProtocol": "http2"})
    assert "Give that Service port appProtocol: http2" in notes
