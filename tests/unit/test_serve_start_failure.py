"""`tenantgate serve` failing to start for a reason nobody foresaw (a client library refusing
a value check-config let through, a bug): one line on standard error and exit 1."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from redis.exceptions import RedisError
from tenantgate.cli import main
from tenantgate.runtime import Runtime
from tenantgate.testing.check import config_document


def test_an_unexpected_error_while_building_the_runtime_is_one_line_and_exit_1(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def refuse(config: object, **_: object) -> Runtime:
        raise RedisError("Invalid SSL Certificate Requirements Flag: bogus")

    path = tmp_path / "tenantgate.yaml"
    path.write_text(yaml.safe_dump(config_document(tmp_path, [])))
    monkeypatch.setattr(Runtime, "build", staticmethod(refuse))
    assert main(["serve", "--config", str(path), "--no-uvloop"]) == 1
    # Before: a 30-line traceback.
    assert capsys.readouterr().err == ("tenantgate: cannot start: RedisError: Invalid SSL "
                                       "Certificate Requirements Flag: bogus\n")
