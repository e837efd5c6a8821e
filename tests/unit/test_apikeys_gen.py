"""The committed generated code under server/tenantgate/_gen is what tools/gen_proto.py makes
from proto/ today: regenerate into a temporary directory and compare every file."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from tenantgate.testing.binaries import in_ci

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "server" / "tenantgate" / "_gen"


def load_generator() -> object:
    spec = importlib.util.spec_from_file_location("gen_proto", ROOT / "tools" / "gen_proto.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_proto"] = module
    spec.loader.exec_module(module)
    return module


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts}


def test_generated_code_is_current(tmp_path: Path) -> None:
    if not in_ci():  # grpcio-tools is a dev dependency; CI installs it, so there it must exist
        pytest.importorskip("grpc_tools", reason="grpcio-tools is a dev dependency")
    generator = load_generator()
    generator.generate(tmp_path / "_gen")  # type: ignore[attr-defined]
    fresh, committed = tree(tmp_path / "_gen"), tree(COMMITTED)
    assert sorted(fresh) == sorted(committed), "run: python tools/gen_proto.py"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert stale == [], f"stale generated files {stale}: run python tools/gen_proto.py"
    assert "apikeys.proto" in "".join(p.name for p in generator.proto_files())  # type: ignore[attr-defined]


def test_generated_imports_point_inside_tenantgate_gen() -> None:
    grpc_module = (COMMITTED / "tenantgate" / "admin" / "v1" / "apikeys_pb2_grpc.py").read_text()
    assert "from tenantgate._gen.tenantgate.admin.v1 import apikeys_pb2" in grpc_module
    assert "\nfrom tenantgate.admin" not in grpc_module  # would hit our own admin package
