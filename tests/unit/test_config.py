"""Config validation: each fixture in tests/fixtures/config holds one mistake, and its
`.expected` sibling the exact message (key path first) that check-config must print."""

from __future__ import annotations

from pathlib import Path

import pytest
from tenantgate.config.load import load_config, parse_config
from tenantgate.config.model import DEFAULT_ALGORITHMS
from tenantgate.errors import ConfigError

FIXTURES = Path(__file__).parent.parent / "fixtures" / "config"
CASES = sorted(p.stem for p in FIXTURES.glob("*.yaml") if p.stem != "valid")


@pytest.fixture(autouse=True)
def context_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TG_TEST_CONTEXT_KEY", "k" * 64)
    monkeypatch.setenv("TG_TEST_SHORT_SECRET", "s" * 40)
    monkeypatch.delenv("TG_TEST_UNSET_VARIABLE", raising=False)


def test_every_fixture_has_its_expected_message() -> None:
    assert len(CASES) >= 30
    assert sorted(p.stem for p in FIXTURES.glob("*.expected")) == CASES


def test_the_base_fixture_is_valid() -> None:
    config = load_config(FIXTURES / "valid.yaml")
    assert [i.name for i in config.issuers] == ["idp", "acme-idp"]
    assert config.context.keys[0].secret.value == b"k" * 64


@pytest.mark.parametrize("case", CASES)
def test_config_error_names_its_key_path(case: str) -> None:
    expected = (FIXTURES / f"{case}.expected").read_text().rstrip("\n")
    with pytest.raises(ConfigError) as caught:
        load_config(FIXTURES / f"{case}.yaml")
    message = "\n".join(caught.value.issues).replace(str(FIXTURES), "{dir}")
    assert message == expected


def test_defaults_are_asymmetric_and_never_none() -> None:
    assert "none" not in {a.lower() for a in DEFAULT_ALGORITHMS}
    assert not any(a.startswith("HS") for a in DEFAULT_ALGORITHMS)
    config = load_config(FIXTURES / "valid.yaml")
    assert config.issuers[0].algorithms == list(DEFAULT_ALGORITHMS)
    assert config.issuers[0].leeway == 30.0
    assert config.context.ttl == 60.0


@pytest.mark.parametrize("text, seconds", [("500ms", 0.5), ("30s", 30.0), ("5m", 300.0),
                                           ("1h", 3600.0), ("1d", 86400.0), ("12", 12.0)])
def test_durations(text: str, seconds: float) -> None:
    config = parse_config((FIXTURES / "valid.yaml").read_text().replace(
        "  metrics: null\n", f"  metrics: null\n  drain_timeout: {text}\n"))
    assert config.listen.drain_timeout == seconds


def test_several_mistakes_are_all_reported_each_with_its_path() -> None:
    text = (FIXTURES / "valid.yaml").read_text().replace("  grpc: 127.0.0.1:9001\n",
                                                         "  grpc: nowhere\n  colour: red\n")
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert caught.value.issues == ["listen.grpc: must be host:port, e.g. 127.0.0.1:9001",
                                   "listen.colour: unknown key"]


def test_secret_never_appears_in_repr() -> None:
    config = load_config(FIXTURES / "valid.yaml")
    assert "kkkk" not in repr(config)


def test_header_names_are_stored_lower_case() -> None:
    # Envoy gives tenantgate lower-case names; a configured X-Api-Key must still match them.
    config = parse_config((FIXTURES / "valid.yaml").read_text()
                          + "credentials:\n  api_key_header: X-Api-Key\n")
    assert config.credentials.api_key_header == "x-api-key"
    text = (FIXTURES / "valid.yaml").read_text().replace(
        "  active_key: c1\n",
        "  active_key: c1\n  tenant_header: X-Tenant-ID\n  strip_headers: [X-Tenant-Plan]\n")
    context = parse_config(text).context
    assert (context.tenant_header, context.strip_headers) == ("x-tenant-id", ["x-tenant-plan"])
