"""A NUL byte in any file path of the config is a config error at its key: os calls raise
ValueError for it, which serve met as a traceback (listen.uds) or check-config let pass."""

from __future__ import annotations

from pathlib import Path

import pytest
from tenantgate.config.load import parse_config
from tenantgate.errors import ConfigError

FIXTURES = Path(__file__).parent.parent / "fixtures" / "config"
NUL = "a NUL byte cannot be part of a file name"


@pytest.mark.parametrize(("old", "new", "key"), [
    ("  metrics: null\n", "  metrics: null\n  uds: \"tg\\0.sock\"\n", "listen.uds"),
    ("      inline: {keys: []}\n", "      file: \"j\\0.json\"\n", "issuers[1].jwks.file"),
    ("  path: \"-\"\n", "  path: \"a\\0.log\"\n", "audit.path"),
    ("audit:\n", "quota:\n  enabled: true\n  ratelimit_service:\n"
                 "    config_files: [\"r\\0.yaml\"]\naudit:\n",
     "quota.ratelimit_service.config_files"),
], ids=["listen-uds", "jwks-file", "audit-path", "ratelimit-config-file"])
def test_a_nul_byte_in_a_file_path_is_a_config_error_at_its_key(
        monkeypatch: pytest.MonkeyPatch, old: str, new: str, key: str) -> None:
    monkeypatch.setenv("TG_TEST_CONTEXT_KEY", "k" * 40)
    text = (FIXTURES / "valid.yaml").read_text()
    assert old in text
    with pytest.raises(ConfigError) as refused:
        parse_config(text.replace(old, new))
    assert any(issue.startswith(key) and NUL in issue for issue in refused.value.issues), \
        refused.value.issues
