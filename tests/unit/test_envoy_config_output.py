"""How `envoy-config --output` puts its files in place: by a rename where Envoy needs one (the
SDS files) and where it can (the bootstrap), keeping a replaced file's mode and owner, and in
place where a rename would replace something that is not a file or cannot be done."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest
from tenantgate.cli import envoy_config as command
from tenantgate.cli import main

pytest.importorskip("envoy_data_plane")

EXAMPLE_CONFIG = Path(__file__).resolve().parents[2] / "envoy" / "tenantgate.yaml"
PLAINTEXT = ["--mode", "front", "--authz", "10.0.0.5:9001", "--authz-plaintext"]


@pytest.fixture(autouse=True)
def context_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENANTGATE_CONTEXT_KEY", "x" * 32)


def envoy_config(output: Path | str, *argv: str) -> int:
    return main(["envoy-config", str(EXAMPLE_CONFIG), *argv, "--output", str(output)])


def tls(pki: Path) -> list[str]:
    return ["--mode", "front", "--authz", "10.0.0.5:9001", "--authz-tls-ca", str(pki / "ca.crt"),
            "--authz-tls-cert", str(pki / "client.crt"), "--authz-tls-key", str(pki / "client.key")]


def test_a_link_output_is_followed_not_replaced(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Before: the link became a regular file, and the file it named was left as it was
    # (`-o /dev/stdout` printed nothing).
    target = tmp_path / "elsewhere" / "envoy.yaml"
    target.parent.mkdir()
    target.write_text("old\n")
    link = tmp_path / "envoy.yaml"
    link.symlink_to(target)
    assert envoy_config(link, *PLAINTEXT) == 0, capsys.readouterr().err
    assert link.is_symlink()
    assert target.read_text().startswith("# Envoy bootstrap rendered by")


def test_a_fifo_output_is_written_into_not_replaced(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # /dev/stdout or /dev/null as root: a rename made them regular files. A FIFO stands in.
    fifo = tmp_path / "envoy.yaml"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # open first: the writer won't block
    try:
        assert envoy_config(fifo, *PLAINTEXT) == 0, capsys.readouterr().err
        assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
        # The bootstrap (some KiB) fits the pipe's buffer, so the write has completed.
        received = b""
        while chunk := os.read(reader, 1 << 16):
            received += chunk
    except BlockingIOError:  # nothing written into the FIFO
        received = b""
    finally:
        os.close(reader)
    assert received.startswith(b"# Envoy bootstrap rendered by")


@pytest.mark.parametrize("make", [
    lambda path, elsewhere: path.symlink_to(elsewhere),
    lambda path, elsewhere: os.mkfifo(path),
], ids=["link", "fifo"])
def test_an_sds_file_that_is_not_a_regular_file_is_refused_before_anything_is_written(
        tmp_path: Path, pki: Path, capsys: pytest.CaptureFixture[str], make: object) -> None:
    # Envoy reads an SDS file again only when a file is renamed onto it; writing through a
    # link would leave it unaware of a new render. Before: the link was replaced, exit 0.
    elsewhere = tmp_path / "elsewhere.yaml"
    elsewhere.write_text("kept\n")
    sds = tmp_path / "envoy.authz-client.sds.yaml"
    make(sds, elsewhere)  # type: ignore[operator]
    assert envoy_config(tmp_path / "envoy.yaml", *tls(pki)) == 2
    assert capsys.readouterr().err == (
        f"tenantgate: --output: cannot write {sds} beside it: not a regular file, and Envoy "
        f"reads an SDS file again only when a file is renamed onto it: remove it\n")
    assert elsewhere.read_text() == "kept\n"
    assert not stat.S_ISREG(os.lstat(sds).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "elsewhere.yaml", sds.name, "pki"]  # neither the CA's SDS file nor the bootstrap


def test_a_replaced_file_keeps_its_mode_owner_and_group(
        tmp_path: Path, pki: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Before: a 0640 root:envoy SDS file came back 0644 root:root, and Envoy's user could no
    # longer read it when the umask left it no "other" bits.
    output = tmp_path / "envoy.yaml"
    assert envoy_config(output, *tls(pki)) == 0, capsys.readouterr().err
    files = sorted(tmp_path.glob("envoy.*"))
    assert len(files) == 3
    owner = (os.getuid(), 4242) if os.geteuid() == 0 else (os.getuid(), os.getgid())
    for path in files:
        os.chown(path, *owner)
        path.chmod(0o640)
    before = {path: path.stat().st_ino for path in files}
    assert envoy_config(output, *tls(pki)) == 0, capsys.readouterr().err
    for path in files:
        status = path.stat()
        assert status.st_ino != before[path], path  # replaced by a rename, as Envoy needs
        assert (stat.S_IMODE(status.st_mode), status.st_uid, status.st_gid) == (
            0o640, *owner), path


def test_a_new_file_gets_the_mode_a_plain_write_would(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The temporary file is created 0600; Envoy may run as another user than this command.
    mask = os.umask(0o027)
    try:
        assert envoy_config(tmp_path / "envoy.yaml", *PLAINTEXT) == 0, capsys.readouterr().err
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "envoy.yaml").stat().st_mode) == 0o640


def test_a_name_near_the_longest_allowed_is_written(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Before: the temporary file was named after it, 14 characters longer than the limit.
    output = tmp_path / ("e" * 245 + ".yaml")
    assert envoy_config(output, *PLAINTEXT) == 0, capsys.readouterr().err
    assert output.read_text().startswith("# Envoy bootstrap rendered by")
    assert [p.name for p in tmp_path.iterdir()] == [output.name]


REFUSED_RENAMES = [errno.EBUSY, errno.EACCES, errno.EPERM, errno.EROFS]


def fail_with(number: int) -> object:
    def fail(*args: object, **kwargs: object) -> None:
        raise OSError(number, os.strerror(number))
    return fail


@pytest.mark.parametrize("step", ["create", "rename"])
@pytest.mark.parametrize("number", REFUSED_RENAMES, ids=errno.errorcode.get)
def test_a_bootstrap_that_cannot_be_renamed_is_written_in_place(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        number: int, step: str) -> None:
    # A single-file bind mount (EBUSY), a writable file in a read-only (EACCES) or sticky
    # (EPERM) directory took a plain write; as root the directory's modes do not stop a rename,
    # so the system call is made to fail as there. Envoy does not watch the bootstrap.
    output = tmp_path / "envoy.yaml"
    output.write_text("old\n")
    inode = output.stat().st_ino
    if step == "create":
        monkeypatch.setattr(command, "_create_beside", fail_with(number))
    else:
        monkeypatch.setattr(command.os, "replace", fail_with(number))
    assert envoy_config(output, *PLAINTEXT) == 0, capsys.readouterr().err
    assert output.stat().st_ino == inode
    assert output.read_text().startswith("# Envoy bootstrap rendered by")
    assert [p.name for p in tmp_path.iterdir()] == ["envoy.yaml"]  # no temporary file left


@pytest.mark.parametrize("number", REFUSED_RENAMES, ids=errno.errorcode.get)
def test_an_sds_file_that_cannot_be_renamed_says_its_directory_must_be_writable(
        tmp_path: Path, pki: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch, number: int) -> None:
    # Written in place, Envoy would not read it again: the fix is a writable directory.
    monkeypatch.setattr(command.os, "replace", fail_with(number))
    assert envoy_config(tmp_path / "envoy.yaml", *tls(pki)) == 1
    assert capsys.readouterr().err == (
        f"tenantgate: cannot write {tmp_path}/envoy.authz-ca.sds.yaml: {os.strerror(number)}: "
        f"its directory must be writable, as Envoy reads an SDS file again only when a file "
        f"is renamed onto it\n")
    assert [p.name for p in tmp_path.iterdir()] == ["pki"]


def test_another_write_error_is_not_retried_in_place(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A full disk is no reason to write half a bootstrap over the one Envoy runs with.
    output = tmp_path / "envoy.yaml"
    output.write_text("old\n")
    monkeypatch.setattr(command.os, "replace", fail_with(errno.ENOSPC))
    assert envoy_config(output, *PLAINTEXT) == 1
    assert capsys.readouterr().err == (
        f"tenantgate: cannot write {output}: {os.strerror(errno.ENOSPC)}\n")
    assert output.read_text() == "old\n"


def test_an_owner_that_cannot_be_given_back_does_not_stop_the_write(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    # In a rootless container a file of an unmapped user shows as 65534, and giving the new
    # file that owner fails with EINVAL (not EPERM): the write stopped there, exit 1.
    output = tmp_path / "envoy.yaml"
    output.write_text("old\n")
    if os.geteuid() == 0:
        os.chown(output, 4242, 4242)
    monkeypatch.setattr(command.os, "fchown", fail_with(errno.EINVAL))
    assert envoy_config(output, *PLAINTEXT) == 0, capsys.readouterr().err
    assert output.read_text().startswith("# Envoy bootstrap rendered by")
    if os.geteuid() == 0:  # a reader allowed by the old group may be refused now: said
        assert capsys.readouterr().err == (
            f"tenantgate: warning: {output}: replaced with this user's owner and group, not "
            f"its own (4242:4242): check that Envoy can still read it\n")
