"""Tenant rules: the id pattern can never admit header/log/SQL-breaking characters, issuer
binding, and the registry."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from tenantgate.config.model import DEFAULT_TENANT_PATTERN
from tenantgate.decision import Reason
from tenantgate.errors import ConfigError
from tenantgate.tenancy import API_KEY_ISSUER, Tenant, TenantRules
from tenantgate.testing.check import DevIssuer, build_config

IDP = DevIssuer(algorithm="ES256")
FORBIDDEN = [chr(c) for c in (*range(0x20), 0x7F)] + [
    " ", '"', "'", "`", ",", ";", "\\", "\u0085", "\u00a0", "\u00e9", "\u0101", "\u2028",
    "\u2029", "\u200b", "\ufeff", "\uff0c", "\uff1b", "\U0001f600"]


def rules(tmp_path: Path, section: dict[str, Any] | None = None,
          **issuer: Any) -> TenantRules:
    """TenantRules from a config with `section` as its tenants: section, one issuer."""
    config = build_config(tmp_path, [IDP.config(**issuer)],
                          **({"tenants": section} if section is not None else {}))
    return TenantRules(config)


@pytest.mark.parametrize("tenant_id", [
    "acme", "a", "a" * 63, "0", "acme-prod_2", "3f2b8c1e-9d4a-4b7e-8f6a-2c1d0e9b7a65"],
    ids=["word", "one-char", "63-chars", "digit", "dash-underscore", "uuid"])
def test_default_pattern_admits_plain_ids_and_uuids(tmp_path: Path, tenant_id: str) -> None:
    assert rules(tmp_path).valid_id(tenant_id)


@pytest.mark.parametrize("tenant_id", [
    "", "a" * 64, "ACME", "Acme", "acme.prod", "acme/x", "acme\n", "\nacme", "acme%00"],
    ids=["empty", "64-chars", "upper", "mixed-case", "dot", "slash", "trailing-newline",
         "leading-newline", "percent"])
def test_default_pattern_refuses(tmp_path: Path, tenant_id: str) -> None:
    assert not rules(tmp_path).valid_id(tenant_id)


# Patterns check-config accepts (its probes do not catch them), each admitting something
# odd: the always-on safety net must still refuse every forbidden character.
LOOSE_BUT_ACCEPTED = [
    r"^(?:[a-z]+|[\x{0100}-\x{017f}]+)$",  # Latin Extended-A: not among the config probes
    r"^ab\x01cd$|^[a-z]+$",  # a control character only in one exact spelling
    r"^[a-z]+(?:\x{2029}[a-z]+)?$",
    r"^[a-z]+(?:\x{1F600})?$",
]


@pytest.mark.parametrize("pattern", [DEFAULT_TENANT_PATTERN, *LOOSE_BUT_ACCEPTED])
def test_no_accepted_pattern_ever_admits_a_forbidden_character(tmp_path: Path,
                                                               pattern: str) -> None:
    tenant_rules = rules(tmp_path, {"pattern": pattern})
    for char in FORBIDDEN:
        for candidate in (char, f"a{char}", f"{char}a", f"ab{char}cd", f"a{char}a", "ā" * 3):
            if tenant_rules.valid_id(candidate):
                pytest.fail(f"{pattern!r} admitted {candidate!r}")
    assert tenant_rules.valid_id("abc")


@pytest.mark.parametrize("pattern", [r".+", r"[^,]+", r"\S+", r"[\pL\pN-]+", r"[a-z ]+",
                                     r"[a-z;]+", r"[a-z\"]+", r"(?s).*"])
def test_config_refuses_patterns_that_admit_forbidden_characters(tmp_path: Path,
                                                                 pattern: str) -> None:
    with pytest.raises(ConfigError, match=r"tenants\.pattern: pattern admits the forbidden"):
        rules(tmp_path, {"pattern": pattern})


@pytest.mark.parametrize("pattern", [r"^[a-z\x{0430}-\x{044f}]{1,63}$", r"^[\pL-]{1,63}$",
                                     r"^[a-z\x{4e00}-\x{9fff}]+$", r"^[a-z\x{ff01}-\x{ff5e}]+$"])
def test_config_refuses_patterns_admitting_common_non_ascii_letters(tmp_path: Path,
                                                                    pattern: str) -> None:
    # Tenancy refuses non-ASCII ids whatever the pattern: such a pattern would load clean and
    # then deny those tenants' every request.
    with pytest.raises(ConfigError, match=r"tenants\.pattern: pattern admits the forbidden"):
        rules(tmp_path, {"pattern": pattern})


def test_word_class_is_ascii_in_patterns(tmp_path: Path) -> None:
    # RE2's \w is [0-9A-Za-z_] (Python's admits every Unicode letter), so this loads.
    tenant_rules = rules(tmp_path, {"pattern": r"^[\w-]{1,63}$"})
    assert tenant_rules.valid_id("Acme_eu-1")
    assert not tenant_rules.valid_id("acm\u00e9")


@pytest.mark.parametrize(("pattern", "why"), [
    (r"^(?!admin)[a-z]+$", "invalid perl operator: (?!"),
    (r"^([a-z])\1$", "invalid escape sequence: \\1"),
    (r"^[a-z]+(?<=x)$", "invalid perl operator: (?<"),
    (r"^[a-z]{1,1001}$", "invalid repetition size"),
])
def test_config_refuses_patterns_re2_cannot_match_in_linear_time(
        tmp_path: Path, pattern: str, why: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(
            f"tenants.pattern: not a regular expression RE2 accepts: {why}")):
        rules(tmp_path, {"pattern": pattern})


# Python's re backtracks through 2^n ways of splitting such an id before failing; RE2 does
# not backtrack, so these verdicts come back (under re these tests never finish).
def test_tenants_pattern_with_nested_repetition_is_matched_without_backtracking(
        tmp_path: Path) -> None:
    tenant_rules = rules(tmp_path, {"pattern": "^([a-z]+)+$"})
    assert not tenant_rules.valid_id("a" * 200 + "!")
    assert tenant_rules.valid_id("a" * 200)


def test_issuer_pattern_with_nested_repetition_is_matched_without_backtracking(
        tmp_path: Path) -> None:
    tenant_rules = rules(tmp_path, {"pattern": "^[a-z!]+$"}, tenant_pattern="^(a|aa)+$")
    assert not tenant_rules.issuer_may_speak_for("idp", "a" * 200 + "!")
    assert tenant_rules.issuer_may_speak_for("idp", "a" * 200)


def test_config_refuses_a_pattern_written_with_non_ascii_characters(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"tenants\.pattern: pattern holds non-ASCII"):
        rules(tmp_path, {"pattern": "^[a-z\u0436-\u0437]{1,63}$"})


def test_issuer_with_a_tenant_list_speaks_only_for_those(tmp_path: Path) -> None:
    listed = rules(tmp_path, **{"tenants": ["acme", "acme-eu"], "tenant_pattern": None})
    assert listed.issuer_may_speak_for("idp", "acme")
    assert listed.issuer_may_speak_for("idp", "acme-eu")
    assert not listed.issuer_may_speak_for("idp", "globex")


def test_issuer_with_a_pattern_speaks_only_for_matching_tenants(tmp_path: Path) -> None:
    tenant_rules = rules(tmp_path, tenant_pattern="^acme-[a-z]+$")
    assert tenant_rules.issuer_may_speak_for("idp", "acme-eu")
    assert not tenant_rules.issuer_may_speak_for("idp", "acme")
    assert not tenant_rules.issuer_may_speak_for("idp", "globex-acme-eu")


def test_unknown_issuer_speaks_for_nobody_and_api_keys_for_their_own_tenant(
        tmp_path: Path) -> None:
    tenant_rules = rules(tmp_path)
    assert not tenant_rules.issuer_may_speak_for("someone-else", "acme")
    assert tenant_rules.issuer_may_speak_for(API_KEY_ISSUER, "acme")


REGISTRY = {"registry": {"acme": {"plan": "gold"}, "initech": {"status": "suspended"}}}


def test_registry_active_suspended_and_unknown(tmp_path: Path) -> None:
    tenant_rules = rules(tmp_path, REGISTRY)
    assert tenant_rules.resolve("acme") == Tenant("acme", "gold", known=True)
    assert tenant_rules.resolve("initech") == Reason.TENANT_SUSPENDED
    assert tenant_rules.resolve("globex") == Reason.TENANT_UNKNOWN  # registry present: deny


def test_unknown_tenants_may_be_allowed_explicitly(tmp_path: Path) -> None:
    tenant_rules = rules(tmp_path, {**REGISTRY, "allow_unknown": True})
    resolved = tenant_rules.resolve("globex")
    assert isinstance(resolved, Tenant) and not resolved.known and resolved.label == "other"


def test_without_a_registry_every_valid_tenant_is_allowed(tmp_path: Path) -> None:
    resolved = rules(tmp_path).resolve("anyone")
    assert isinstance(resolved, Tenant) and resolved.plan is None


def test_metric_label_names_only_registry_tenants(tmp_path: Path) -> None:
    tenant_rules = rules(tmp_path, {**REGISTRY, "allow_unknown": True})
    assert tenant_rules.label("acme") == "acme"
    assert tenant_rules.label("globex") == "other"
    assert tenant_rules.label(None) == "other"



def test_verdicts_are_memoized_per_issuer_and_claim_and_stay_correct(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from tenantgate.config.model import Config
    from tenantgate.tenancy import MAX_CACHED_VERDICTS

    monkeypatch.setenv("TG_MEMO_SECRET", "m" * 40)
    issuer = {"audiences": ["api"], "jwks": {"inline": {"keys": []}}}
    rules = TenantRules(Config.model_validate({
        "issuers": [{"name": "idp", "issuer": "https://idp", "tenant_pattern": "^[a-z0-9]+$",
                     **issuer},
                    {"name": "other", "issuer": "https://other", "tenants": ["globex"],
                     **issuer}],
        "context": {"active_key": "k", "keys": [{"id": "k",
                                                 "secret": {"fromEnv": "TG_MEMO_SECRET"}}]}}))
    first = rules.decide("idp", "acme")
    assert isinstance(first, Tenant) and first.id == "acme"
    assert rules.decide("idp", "acme") is first  # the same verdict, not recomputed
    assert rules.decide("other", "acme") == Reason.ISSUER_NOT_ALLOWED_FOR_TENANT
    assert rules.decide("idp", ["acme"]) == Reason.TENANT_INVALID  # unhashable: never cached
    for n in range(MAX_CACHED_VERDICTS + 5):  # bounded: cleared when full
        rules.decide("idp", f"t{n}")
    assert len(rules._verdicts) <= MAX_CACHED_VERDICTS


def test_overlong_claims_are_refused_without_being_remembered(tmp_path: Path) -> None:
    # The verdict memo bounds its entries, not their size: 10,000 claims of a few KiB each,
    # from an issuer's signed tokens, held tens of MiB after the tokens themselves were gone.
    tenant_rules = rules(tmp_path)
    for n in range(100):
        assert tenant_rules.decide("idp", f"{n:04d}" + "a" * 1000) == Reason.TENANT_INVALID
    assert tenant_rules.decide("idp", "a" * 256) == Reason.TENANT_INVALID
    assert tenant_rules._verdicts == {}
    assert isinstance(tenant_rules.decide("idp", "acme"), Tenant)
    assert list(tenant_rules._verdicts) == [("idp", "acme")]
