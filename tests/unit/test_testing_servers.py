"""The throwaway servers of tenantgate.testing leave nothing behind when their start is cut
short (no server is started here: the binaries are stand-ins)."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
from tenantgate.testing import postgres


def test_a_ctrl_c_during_initdb_leaves_no_data_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Before: only a failed initdb removed the directory; a signal during it left ~22 MB.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(postgres, "_major", lambda bin_dir: 18)
    real_run = subprocess.run

    def run(args: list[str], **kwargs: Any) -> Any:
        if Path(args[0]).name == "initdb":
            Path(args[2]).mkdir()  # as far as it got
            raise KeyboardInterrupt
        return real_run(args, **kwargs)

    monkeypatch.setattr(subprocess, "run", run)
    cluster = postgres.PostgresCluster(bin_dir=tmp_path / "bin")
    with pytest.raises(KeyboardInterrupt):
        cluster.start()
    assert list((tmp_path / "tmp").iterdir()) == []
