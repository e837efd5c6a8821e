"""check-config refuses an audit.path that serve cannot open, with serve's own message, and
leaves no file behind."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from tenantgate.cli import main
from tenantgate.cli.check_config import open_problem
from tenantgate.config.load import load_config
from tenantgate.errors import ConfigError
from tenantgate.runtime import Runtime
from tenantgate.testing.check import DevIssuer, config_document


def write_config(directory: Path, audit_path: str) -> Path:
    document = config_document(directory, [DevIssuer().config()])
    document["audit"] = {"path": audit_path}
    path = directory / "tenantgate.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def serve_refusal(config_path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:  # what serve and a reload say (Runtime.build)
        Runtime.build(load_config(config_path))
    return caught.value.issues


@pytest.mark.parametrize("audit_path", ["/nonexistent/dir/audit.log", "{dir}",
                                        "{dir}/tenantgate.yaml/audit.log"],
                         ids=["missing-directory", "a-directory", "under-a-file"])
def test_an_audit_path_serve_cannot_open_fails_check_config_as_serve_does(
        tmp_path: Path, audit_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    config_path = write_config(tmp_path, audit_path.format(dir=tmp_path))
    assert main(["check-config", str(config_path)]) == 2
    expected = serve_refusal(config_path)
    assert expected[0].startswith("audit.path: cannot open ")
    assert capsys.readouterr().err == "".join(f"{config_path}: {i}\n" for i in expected)


@pytest.mark.parametrize("audit_path", ["audit.log", "{dir}/existing.log", "-"],
                         ids=["new-file-relative", "existing-file", "stdout"])
def test_an_audit_path_serve_can_open_passes_and_is_not_created(
        tmp_path: Path, audit_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "existing.log").write_text("")
    config_path = write_config(tmp_path, audit_path.format(dir=tmp_path))
    before = sorted(tmp_path.iterdir())
    assert main(["check-config", str(config_path)]) == 0, capsys.readouterr().err
    assert sorted(tmp_path.iterdir()) == before  # check-config created nothing


def test_a_disabled_audit_log_is_not_checked(tmp_path: Path) -> None:
    config_path = write_config(tmp_path, "/nonexistent/dir/audit.log")
    document = yaml.safe_load(config_path.read_text())
    document["audit"]["enabled"] = False
    config_path.write_text(yaml.safe_dump(document))
    assert main(["check-config", str(config_path)]) == 0


def _dangling_link_to_a_missing_directory(d: Path) -> str:
    (d / "link").symlink_to(d / "missing" / "audit.log")
    return f"{d}/link"


def _symlink_loop(d: Path) -> str:
    (d / "loop-a").symlink_to(d / "loop-b")
    (d / "loop-b").symlink_to(d / "loop-a")
    return f"{d}/loop-a"


def _link_to_a_directory_name(d: Path) -> str:
    (d / "link").symlink_to("newdir/")  # O_CREAT through it: EISDIR
    return f"{d}/link"


@pytest.mark.parametrize("make_path", [
    lambda d: f"{d}/{'a' * 256}/audit.log",
    lambda d: f"{d}/{'a' * 256}",
    _dangling_link_to_a_missing_directory,
    _symlink_loop,
    lambda d: f"{d}/newdir/",
    lambda d: f"{d}/tenantgate.yaml/",
    _link_to_a_directory_name,
    lambda d: f"{d}/missing/../audit.log",
], ids=["long-directory-name", "long-file-name", "dangling-link-to-missing-directory",
        "symlink-loop", "trailing-slash", "trailing-slash-after-a-file",
        "link-to-a-directory-name", "dot-dot-after-a-missing-directory"])
def test_check_config_says_what_serve_says_where_the_lookup_fails(
        tmp_path: Path, make_path: Callable[[Path], str],
        capsys: pytest.CaptureFixture[str]) -> None:
    # Before: a traceback (ENAMETOOLONG), or ok while serve refused.
    config_path = write_config(tmp_path, make_path(tmp_path))
    assert main(["check-config", str(config_path)]) == 2
    expected = serve_refusal(config_path)
    assert expected[0].startswith("audit.path: cannot open ")
    assert capsys.readouterr().err == "".join(f"{config_path}: {i}\n" for i in expected)


def _dangling_link_to_a_new_file(d: Path) -> str:
    (d / "link").symlink_to(d / "new.log")  # serve creates new.log through it
    return f"{d}/link"


def _fifo(d: Path) -> str:
    os.mkfifo(d / "audit.fifo")  # no reader: serve waits for one; check-config must not
    return f"{d}/audit.fifo"


def _link_to_a_file(d: Path) -> str:
    (d / "existing.log").write_text("")
    (d / "link").symlink_to("existing.log")
    return f"{d}/link"


@pytest.mark.parametrize("make_path", [_dangling_link_to_a_new_file, _fifo, _link_to_a_file],
                         ids=["dangling-link-to-a-new-file", "fifo-without-reader",
                              "link-to-a-file"])
def test_links_and_fifos_serve_can_open_pass_and_nothing_is_created(
        tmp_path: Path, make_path: Callable[[Path], str],
        capsys: pytest.CaptureFixture[str]) -> None:
    config_path = write_config(tmp_path, make_path(tmp_path))
    before = sorted(tmp_path.iterdir())
    assert main(["check-config", str(config_path)]) == 0, capsys.readouterr().err
    assert sorted(tmp_path.iterdir()) == before


def test_a_nul_byte_in_the_audit_path_is_a_config_error_for_serve_too(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Before: check-config said ok, and serve's os.open raised ValueError: a traceback.
    config_path = write_config(tmp_path, f"{tmp_path}/audit\x00.log")
    assert main(["check-config", str(config_path)]) == 2
    message = "audit.path: a NUL byte cannot be part of a file name"
    assert capsys.readouterr().err == f"{config_path}: {message}\n"
    with pytest.raises(ConfigError) as caught:  # serve loads the config the same way
        load_config(config_path)
    assert caught.value.issues == [message]


def test_a_proc_fd_link_is_judged_by_what_it_opens(tmp_path: Path) -> None:
    # /proc/self/fd/N's link text (`socket:[N]`) names no path: read as one, check-config
    # judged the creation of a file in /proc/self/fd and said ok where serve gets ENXIO.
    left, right = socket.socketpair()
    with left, right:
        path = f"/proc/self/fd/{left.fileno()}"
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC))
            serve_errno = None
        except OSError as exc:
            serve_errno = exc.errno
        assert serve_errno is not None  # a socket cannot be opened
        assert open_problem(path) == serve_errno
