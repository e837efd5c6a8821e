"""`envoy-config --authz-tls-*` hands Envoy the TLS files through file-based SDS, which Envoy
re-reads on renewal: the SDS files beside --output, what they name and watch, how they and the
bootstrap are written (each by a rename, never beside a directory), and the refusals around
them. A real Envoy renewing them is tests/e2e/test_envoy_tls_rotation.py."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from tenantgate.cli import main
from tenantgate.config.envoy import tls
from tenantgate.testing.pki import write_pki

pytest.importorskip("envoy_data_plane")

EXAMPLE_CONFIG = Path(__file__).resolve().parents[2] / "envoy" / "tenantgate.yaml"
REMOTE = ["--mode", "front", "--authz", "10.0.0.5:9001"]
SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


@pytest.fixture(autouse=True)
def context_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENANTGATE_CONTEXT_KEY", "x" * 32)


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    """A Kubernetes-style Secret volume: ca.crt, tls.crt and tls.key are links through a
    `..data` link to the directory that holds the files."""
    directory = tmp_path / "tls"
    (directory / "..2024_01_01").mkdir(parents=True)
    write_pki(directory / "..2024_01_01")
    os.symlink("..2024_01_01", directory / "..data")
    for name, issued in (("ca.crt", "ca.crt"), ("tls.crt", "client.crt"),
                         ("tls.key", "client.key")):
        os.symlink(f"..data/{issued}", directory / name)
    return directory


def tls_flags(ca: Path, cert: Path | None = None, key: Path | None = None) -> list[str]:
    flags = ["--authz-tls-ca", str(ca)]
    if cert is not None and key is not None:
        flags += ["--authz-tls-cert", str(cert), "--authz-tls-key", str(key)]
    return flags


def render(capsys: pytest.CaptureFixture[str], output: Path, *argv: str) -> dict[str, Any]:
    code = main(["envoy-config", str(EXAMPLE_CONFIG), *REMOTE, *argv, "--output", str(output)])
    assert code == 0, capsys.readouterr().err
    bootstrap: dict[str, Any] = yaml.safe_load(output.read_text())
    return bootstrap


def common_tls_context(bootstrap: dict[str, Any]) -> dict[str, Any]:
    [authz] = [c for c in bootstrap["static_resources"]["clusters"] if c["name"] == "tenantgate"]
    context: dict[str, Any] = authz["transport_socket"]["typed_config"]["common_tls_context"]
    return context


def sds_secret(reference: dict[str, Any]) -> dict[str, Any]:
    """The one Secret of the SDS file a bootstrap's SdsSecretConfig names, checked to be it."""
    source = reference["sds_config"]
    assert source["resource_api_version"] == "V3"
    path = Path(source["path_config_source"]["path"])
    assert path.is_absolute()  # Envoy may start in another directory
    [secret] = yaml.safe_load(path.read_text())["resources"]  # Envoy takes one per file
    assert secret.pop("@type") == SECRET_TYPE
    assert secret.pop("name") == reference["name"]
    found: dict[str, Any] = secret
    return found


def test_mutual_tls_reaches_envoy_through_sds_files_watching_the_secret_volume(
        tmp_path: Path, volume: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bootstrap = render(capsys, tmp_path / "front.yaml",
                       *tls_flags(volume / "ca.crt", volume / "tls.crt", volume / "tls.key"))
    context = common_tls_context(bootstrap)
    assert "validation_context" not in context and "tls_certificates" not in context
    # A file named in the cluster is read at start only; through SDS, on every ..data move.
    ca_reference = context["combined_validation_context"]["validation_context_sds_secret_config"]
    [client_reference] = context["tls_certificate_sds_secret_configs"]
    assert sds_secret(ca_reference) == {"validation_context": {
        "trusted_ca": {"filename": str(volume / "ca.crt")},  # the link, never ..data's target
        "watched_directory": {"path": str(volume)}}}
    assert sds_secret(client_reference) == {"tls_certificate": {
        "certificate_chain": {"filename": str(volume / "tls.crt")},
        "private_key": {"filename": str(volume / "tls.key")},
        "watched_directory": {"path": str(volume)}}}  # one watch: the pair read together
    # Named after the bootstrap, beside it: another bootstrap there keeps its own.
    assert sorted(p.name for p in tmp_path.glob("front.*")) == [
        "front.authz-ca.sds.yaml", "front.authz-client.sds.yaml", "front.yaml"]
    # Envoy refuses SDS, from files too, without a node id and cluster.
    assert bootstrap["node"] == {"id": "tenantgate-envoy", "cluster": "tenantgate-envoy"}


def test_tls_without_a_client_certificate_writes_only_the_ca_file(
        tmp_path: Path, volume: Path, capsys: pytest.CaptureFixture[str]) -> None:
    context = common_tls_context(render(capsys, tmp_path / "envoy.yaml",
                                        *tls_flags(volume / "ca.crt")))
    assert "tls_certificate_sds_secret_configs" not in context
    assert sorted(p.name for p in tmp_path.glob("envoy.*")) == [
        "envoy.authz-ca.sds.yaml", "envoy.yaml"]


def test_a_certificate_and_key_in_two_directories_are_each_watched_by_envoy(
        tmp_path: Path, volume: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # One watched directory would miss a key renewed in the other one; without it, Envoy
    # watches the directory of each file.
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "tls.key").write_bytes((volume / "tls.key").read_bytes())
    context = common_tls_context(render(
        capsys, tmp_path / "envoy.yaml",
        *tls_flags(volume / "ca.crt", volume / "tls.crt", keys / "tls.key")))
    [client_reference] = context["tls_certificate_sds_secret_configs"]
    assert sds_secret(client_reference) == {"tls_certificate": {
        "certificate_chain": {"filename": str(volume / "tls.crt")},
        "private_key": {"filename": str(keys / "tls.key")}}}


def test_no_tls_means_no_node_and_no_sds_files(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bootstrap = render(capsys, tmp_path / "envoy.yaml", "--authz-plaintext")
    assert "node" not in bootstrap
    assert [p.name for p in tmp_path.iterdir()] == ["envoy.yaml"]


def test_tls_to_stdout_is_refused(volume: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The SDS files need a place the bootstrap can name; printed without them, Envoy would
    # not start, and with the files in the cluster it would never see a renewal.
    assert main(["envoy-config", str(EXAMPLE_CONFIG), *REMOTE,
                 *tls_flags(volume / "ca.crt")]) == 2
    out, err = capsys.readouterr()
    assert (out, err) == ("", "tenantgate: --authz-tls-ca: needs --output FILE: Envoy re-reads "
                              "the TLS files through SDS files written beside the bootstrap\n")


def test_a_non_utf8_output_is_refused_with_tls(
        tmp_path: Path, volume: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = os.fsdecode(os.fsencode(tmp_path) + b"/envoy-\xff.yaml")
    assert main(["envoy-config", str(EXAMPLE_CONFIG), *REMOTE, *tls_flags(volume / "ca.crt"),
                 "--output", output]) == 2
    assert capsys.readouterr().err == ("tenantgate: --output: not valid UTF-8, and the "
                                       "bootstrap names the SDS files beside it by path\n")
    assert list(tmp_path.iterdir()) == [volume]


def test_an_sds_file_that_cannot_be_written_leaves_no_bootstrap(
        tmp_path: Path, volume: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Envoy refuses to start on a bootstrap naming a missing SDS file: none is left behind.
    blocked = tmp_path / "envoy.authz-ca.sds.yaml"
    blocked.mkdir()
    assert main(["envoy-config", str(EXAMPLE_CONFIG), *REMOTE, *tls_flags(volume / "ca.crt"),
                 "--output", str(tmp_path / "envoy.yaml")]) == 2
    assert capsys.readouterr().err == (
        f"tenantgate: --output: cannot write {blocked} beside it: not a regular file, and "
        f"Envoy reads an SDS file again only when a file is renamed onto it: remove it\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == [blocked.name, volume.name]  # no .tmp


@pytest.mark.parametrize("output", ["out", "out/", "out/.", "new/"],
                         ids=["directory", "trailing-slash", "dot", "missing-directory"])
def test_a_directory_output_is_refused_before_anything_is_written(
        tmp_path: Path, volume: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch, output: str) -> None:
    # Before: the SDS files, named after the directory, went into its parent (out.authz-ca...),
    # and then the bootstrap failed with "Is a directory".
    (tmp_path / "out").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(["envoy-config", str(EXAMPLE_CONFIG), *REMOTE, *tls_flags(volume / "ca.crt"),
              "--output", output])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(
        f"error: argument --output/-o: {output} names a directory: give the file to write the "
        f"bootstrap to")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "tls"]
    assert list((tmp_path / "out").iterdir()) == []


def test_dash_is_stdout(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                        monkeypatch: pytest.MonkeyPatch) -> None:
    # Before: a file named `-`.
    monkeypatch.chdir(tmp_path)
    assert main(["envoy-config", str(EXAMPLE_CONFIG), *REMOTE, "--authz-plaintext",
                 "-o", "-"]) == 0
    assert capsys.readouterr().out.startswith("# Envoy bootstrap rendered by")
    assert list(tmp_path.iterdir()) == []
    # A file of that name is still `./-`.
    assert main(["envoy-config", str(EXAMPLE_CONFIG), *REMOTE, "--authz-plaintext",
                 "-o", "./-"]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["-"]


def test_dash_is_refused_with_tls(tmp_path: Path, volume: Path,
                                  capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # Before: `-` and `-.authz-ca.sds.yaml` written in the current directory, exit 0.
    monkeypatch.chdir(tmp_path)
    assert main(["envoy-config", str(EXAMPLE_CONFIG), *REMOTE, *tls_flags(volume / "ca.crt"),
                 "-o", "-"]) == 2
    assert capsys.readouterr() == ("", "tenantgate: --output: - is stdout, and --authz-tls-ca "
                                       "needs a file: Envoy reads the TLS files through SDS "
                                       "files written beside it\n")
    assert list(tmp_path.iterdir()) == [volume]


def test_each_file_is_replaced_by_a_rename(
        tmp_path: Path, volume: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Envoy reads an SDS file again when a file is moved onto it, and must never read one half
    # written: rendering again puts new files in place (new inodes), leaving nothing beside.
    flags = tls_flags(volume / "ca.crt", volume / "tls.crt", volume / "tls.key")
    output = tmp_path / "out" / "envoy.yaml"
    output.parent.mkdir()
    mask = os.umask(0o022)
    try:
        render(capsys, output, *flags)
        first = {p.name: p.stat().st_ino for p in output.parent.iterdir()}
        render(capsys, output, *flags)
    finally:
        os.umask(mask)
    files = {p.name: p.stat() for p in output.parent.iterdir()}
    assert sorted(files) == sorted(first) == [
        "envoy.authz-ca.sds.yaml", "envoy.authz-client.sds.yaml", "envoy.yaml"]
    for name, status in files.items():
        assert status.st_ino != first[name], name
        assert status.st_mode & 0o777 == 0o644, name  # as a plain write: Envoy may be another user


def test_each_tls_file_is_read_once(
        tmp_path: Path, volume: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Before: once for the bootstrap, once more for the SDS files.
    read: list[str] = []
    real = tls.read_regular_file

    def counted(path: Path, limit: int) -> bytes:
        read.append(path.name)
        return real(path, limit)

    monkeypatch.setattr(tls, "read_regular_file", counted)
    render(capsys, tmp_path / "envoy.yaml",
           *tls_flags(volume / "ca.crt", volume / "tls.crt", volume / "tls.key"))
    assert sorted(read) == ["ca.crt", "tls.crt", "tls.key"]


def test_the_help_says_where_the_sds_files_go(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["envoy-config", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Needs --output: Envoy reads the TLS files through SDS files written beside it" in text
    assert ".authz-ca.sds.yaml and .authz-client.sds.yaml" in text.replace("- ", "-")
    assert ("write here (- for stdout, the default), replacing FILE in one rename (written in "
            "place, links followed, when FILE is not a regular file or its directory refuses "
            "a rename)") in text
    assert ("each by a rename, so their directory must be writable and each must be absent or "
            "a regular file") in text
    # It once said only "Check it with `envoy --mode validate`", which passes a bootstrap whose
    # TLS files Envoy then cannot load.
    assert ("Check it with `envoy --mode validate -c FILE`, which checks the bootstrap, not the "
            "TLS files it reaches through SDS") in text
    assert "sds.tenantgate-authz-ca.update_rejected" in text.replace("- ", "-")  # wrapped
