"""Imports point inward (STYLE.md): walk every module's imports with `ast` and fail on a
wrong arrow. Imports under `if TYPE_CHECKING:` are annotations, not arrows, and are skipped."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest
import tenantgate

PACKAGE = Path(tenantgate.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor[:len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # submodules
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {name for name in found if name == "tenantgate" or name.startswith("tenantgate.")}


@cache
def import_graph() -> dict[str, set[str]]:
    graph = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if "_gen" in path.parts:
            continue
        module = _module_name(path)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        graph[module] = _imports(tree, module, path.name == "__init__.py")
    return graph


def _within(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _wrong(importers: tuple[str, ...], allowed: tuple[str, ...]) -> list[str]:
    """Arrows from modules under `importers` to tenantgate modules not under `allowed`."""
    graph = import_graph()
    return sorted(f"{src} -> {dst}" for src, targets in graph.items()
                  if _within(src, *importers)
                  for dst in targets
                  if dst != "tenantgate" and not _within(dst, *allowed))


def test_the_walk_sees_the_package() -> None:
    graph = import_graph()
    assert "tenantgate.authz" in graph and "tenantgate.pipeline" in graph["tenantgate.authz"]
    assert "tenantgate.runtime" not in graph["tenantgate.pipeline"]  # TYPE_CHECKING only


def test_nothing_imports_cli_or_app() -> None:
    graph = import_graph()
    wrong = sorted(f"{src} -> {dst}" for src, targets in graph.items() for dst in targets
                   if not _within(src, "tenantgate.cli")
                   and _within(dst, "tenantgate.cli", "tenantgate.app"))
    assert wrong == []


def test_backend_imports_only_context() -> None:
    allowed = ("tenantgate.backend", "tenantgate.context", "tenantgate.socket_deadline")
    assert _wrong(("tenantgate.backend",), allowed) == []


def test_context_stands_alone() -> None:
    # Backends import it without the rest of tenantgate.
    assert import_graph()["tenantgate.context"] == set()


@pytest.mark.parametrize("leaf", ["tenantgate.memo", "tenantgate.config.paths",
                                  "tenantgate.socket_deadline"])
def test_shared_helpers_stand_alone(leaf: str) -> None:
    # Policy and quota share the first two, backend/ and observe/ the last: a tenantgate
    # import here could close a cycle, or pull the rest of tenantgate into a backend.
    assert import_graph()[leaf] == set()


def test_observe_is_a_leaf() -> None:
    allowed = ("tenantgate.observe", "tenantgate.socket_deadline")
    assert _wrong(("tenantgate.observe",), allowed) == []


def test_config_imports_only_config_errors_and_context() -> None:
    # context stands alone (above), so config may take the key id rule from it without a cycle.
    allowed = ("tenantgate.config", "tenantgate.errors", "tenantgate.context")
    assert _wrong(("tenantgate.config",), allowed) == []


CHECK_PATH_CORE = ("tenantgate.request", "tenantgate.decision", "tenantgate.errors",
                   "tenantgate.config", "tenantgate.observe", "tenantgate.wire",
                   "tenantgate.memo")


@pytest.mark.parametrize("leaf", ["tenantgate.request", "tenantgate.decision",
                                  "tenantgate.errors", "tenantgate.wire"])
def test_request_and_decision_point_nowhere_outward(leaf: str) -> None:
    assert _wrong((leaf,), CHECK_PATH_CORE) == []


@pytest.mark.parametrize("stage", ["tenantgate.tenancy", "tenantgate.policy",
                                   "tenantgate.identity.credentials", "tenantgate.identity.jwt",
                                   "tenantgate.identity.jwks", "tenantgate.identity.keys",
                                   "tenantgate.identity.token_cache",
                                   "tenantgate.identity.rejected_tokens",
                                   "tenantgate.identity.stage"])
def test_stages_do_not_import_the_servicer_runtime_or_each_other_outward(stage: str) -> None:
    allowed = (*CHECK_PATH_CORE, "tenantgate.identity", "tenantgate.context")
    assert _wrong((stage,), allowed) == []


@pytest.mark.parametrize("module", ["tenantgate.pipeline", "tenantgate.request",
                                    "tenantgate.decision", "tenantgate.tenancy",
                                    "tenantgate.policy", "tenantgate.identity.credentials",
                                    "tenantgate.identity.jwt", "tenantgate.identity.stage",
                                    "tenantgate.identity.token_cache",
                                    "tenantgate.identity.rejected_tokens"])
def test_stages_do_not_log(module: str) -> None:
    # One canonical line per decision, written by the servicer: stages return values.
    path = PACKAGE.parent / (module.replace(".", "/") + ".py")
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert "logging" not in imported and "tenantgate.observe.audit" not in imported
