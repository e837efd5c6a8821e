"""Markers come from the directory a test lives in; a missing server binary fails under CI=true."""

from __future__ import annotations

from pathlib import Path

import pytest

_KINDS = ("unit", "integration", "e2e", "security")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    root = Path(__file__).parent
    for item in items:
        parts = Path(str(item.fspath)).relative_to(root).parts
        if parts and parts[0] in _KINDS:
            item.add_marker(getattr(pytest.mark, parts[0]))


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    """A directory holding tenantgate.testing.pki's CA, server and client files (a test that
    needs the issued objects instead defines its own `pki`)."""
    from tenantgate.testing.pki import write_pki

    directory = tmp_path / "pki"
    directory.mkdir()
    write_pki(directory)
    return directory
