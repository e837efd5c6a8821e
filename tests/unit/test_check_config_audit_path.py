"""check-config refuses an audit.path that serve cannot open, with serve's own message, and
leaves no file behind."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from tenantgate.cli import main
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
