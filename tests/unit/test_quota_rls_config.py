"""envoyproxy/ratelimit config files: every unit they define, and precise errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from tenantgate.cli import main
from tenantgate.errors import ConfigError
from tenantgate.quota.rls_config import UNIT_SECONDS, load_domains


@pytest.mark.parametrize("unit, seconds", [("second", 1), ("MINUTE", 60), ("hour", 3600),
                                           ("day", 86400), ("week", 604800),
                                           ("month", 2_592_000), ("YEAR", 31_536_000)])
def test_every_envoyproxy_ratelimit_unit_is_accepted(tmp_path: Path, unit: str,
                                                     seconds: int) -> None:
    path = tmp_path / "rl.yaml"
    path.write_text("domain: edge\ndescriptors:\n"
                    f"  - key: tenant\n    rate_limit: {{unit: {unit}, requests_per_unit: 5}}\n")
    limit = load_domains([str(path)])["edge"].any_value["tenant"].limit
    assert limit is not None and UNIT_SECONDS[limit.unit] == seconds


def test_an_unknown_unit_names_its_place(tmp_path: Path) -> None:
    path = tmp_path / "rl.yaml"
    path.write_text("domain: edge\ndescriptors:\n"
                    "  - key: tenant\n    rate_limit: {unit: fortnight, requests_per_unit: 5}\n")
    with pytest.raises(ConfigError) as error:
        load_domains([str(path)])
    assert "descriptors[0].rate_limit.unit: must be one of" in str(error.value)


def test_an_empty_domain_is_an_error_naming_the_file(tmp_path: Path) -> None:
    # Before: accepted, and envoy-config then rendered no rate-limit filter at all.
    path = tmp_path / "rl.yaml"
    path.write_text('domain: ""\ndescriptors:\n'
                    "  - key: tenant\n    rate_limit: {unit: second, requests_per_unit: 5}\n")
    with pytest.raises(ConfigError) as error:
        load_domains([str(path)])
    assert error.value.issues == [f"{path}: domain: must not be empty"]


@pytest.mark.parametrize(("node", "where"), [
    ('shadow_mode: "false"\n    rate_limit: {unit: second, requests_per_unit: 5}',
     "descriptors[0].shadow_mode: must be true or false, not 'false'"),
    ('rate_limit: {unlimited: "no", unit: second, requests_per_unit: 5}',
     "descriptors[0].rate_limit.unlimited: must be true or false, not 'no'"),
    ('detailed_metric: 1\n    rate_limit: {unit: second, requests_per_unit: 5}',
     "descriptors[0].detailed_metric: must be true or false, not 1"),
])
def test_flags_must_be_real_booleans(tmp_path: Path, node: str, where: str) -> None:
    # bool("false") is True: a quoted value must not silently mean the opposite.
    path = tmp_path / "rl.yaml"
    path.write_text(f"domain: edge\ndescriptors:\n  - key: tenant\n    {node}\n")
    with pytest.raises(ConfigError) as error:
        load_domains([str(path)])
    assert error.value.issues == [f"{path}: {where}"]


def test_real_booleans_are_read_as_written(tmp_path: Path) -> None:
    path = tmp_path / "rl.yaml"
    path.write_text("domain: edge\ndescriptors:\n"
                    "  - key: tenant\n    shadow_mode: false\n"
                    "    rate_limit: {unlimited: false, unit: second, requests_per_unit: 5}\n"
                    "  - key: health\n    shadow_mode: true\n    rate_limit: {unlimited: true}\n")
    root = load_domains([str(path)])["edge"]
    tenant, health = root.any_value["tenant"], root.any_value["health"]
    assert (tenant.shadow, tenant.unlimited, health.shadow, health.unlimited) == (
        False, False, True, True)


def test_a_duplicate_key_is_an_error(tmp_path: Path) -> None:
    # safe_load kept the last value: here the 5/s limit would silently become 500/s.
    path = tmp_path / "rl.yaml"
    path.write_text("domain: edge\ndescriptors:\n  - key: tenant\n"
                    "    rate_limit: {unit: second, requests_per_unit: 5,"
                    " requests_per_unit: 500}\n")
    with pytest.raises(ConfigError) as error:
        load_domains([str(path)])
    assert error.value.issues == [f"{path}: line 4 column 54: duplicate key 'requests_per_unit'"]


def test_requests_per_unit_must_fit_the_wire_field(tmp_path: Path) -> None:
    # RateLimit.requests_per_unit and limit_remaining are uint32 on the wire: a bigger count
    # loaded here failed every ShouldRateLimit that matched it (protobuf refuses the value).
    # envoyproxy/ratelimit reads the field as a uint32 too.
    path = tmp_path / "rl.yaml"
    path.write_text("domain: edge\ndescriptors:\n"
                    "  - key: tenant\n    rate_limit: {unit: day, requests_per_unit: 4294967296}\n"
                    "  - key: user\n    rate_limit: {unit: day, requests_per_unit: 4294967295}\n")
    with pytest.raises(ConfigError) as error:
        load_domains([str(path)])
    assert error.value.issues == [
        f"{path}: descriptors[0].rate_limit.requests_per_unit: must be a whole number "
        "from 0 to 4294967295"]


@pytest.mark.parametrize(("first", "second", "where"), [
    ("key: tenant", "key: tenant", "descriptors[1]: duplicate descriptor tenant"),
    ("key: tenant\n    value: acme", "key: tenant\n    value: acme",
     "descriptors[1]: duplicate descriptor tenant=acme"),
    ("key: route\n    value: /api/*", "key: route\n    value: /api/*",
     "descriptors[1]: duplicate descriptor route=/api/*"),
])
def test_a_duplicate_descriptor_is_an_error(tmp_path: Path, first: str, second: str,
                                            where: str) -> None:
    # The second silently replaced the first (or, for a prefix, was never reached): one of
    # the two limits was lost. envoyproxy/ratelimit refuses the file.
    path = tmp_path / "rl.yaml"
    path.write_text("domain: edge\ndescriptors:\n"
                    f"  - {first}\n    rate_limit: {{unit: second, requests_per_unit: 5}}\n"
                    f"  - {second}\n    rate_limit: {{unit: second, requests_per_unit: 500}}\n")
    with pytest.raises(ConfigError) as error:
        load_domains([str(path)])
    assert error.value.issues == [f"{path}: {where}"]


def test_the_same_descriptor_under_different_parents_is_no_duplicate(tmp_path: Path) -> None:
    path = tmp_path / "rl.yaml"
    path.write_text("domain: edge\ndescriptors:\n"
                    "  - key: a\n    descriptors: [{key: x, rate_limit: {unit: day, "
                    "requests_per_unit: 1}}]\n"
                    "  - key: b\n    descriptors: [{key: x, rate_limit: {unit: day, "
                    "requests_per_unit: 2}}]\n")
    root = load_domains([str(path)])["edge"]
    limits = [root.any_value[k].any_value["x"].limit for k in "ab"]
    assert [lim.requests_per_unit for lim in limits if lim is not None] == [1, 2]


@pytest.mark.parametrize(("written", "sent"), [
    ("true", "true"), ("yes", "yes"), ("1.10", "1.10"), ("010", "010"), ("0x1F", "0x1F"),
    ("2024-01-01", "2024-01-01"), ("'quoted'", "quoted"), ("200", "200"),
])
def test_a_descriptor_value_matches_as_written(tmp_path: Path, written: str, sent: str) -> None:
    # Envoy sends values as strings and envoyproxy/ratelimit reads `value` as written; read
    # as YAML types, `true` became "True" and `1.10` "1.1", so they never matched.
    path = tmp_path / "rl.yaml"
    path.write_text("domain: edge\ndescriptors:\n"
                    f"  - key: flag\n    value: {written}\n"
                    "    rate_limit: {unit: second, requests_per_unit: 5}\n")
    root = load_domains([str(path)])["edge"]
    node = root.child("flag", sent)
    assert node is not None and node.limit is not None


@pytest.mark.parametrize("value", ['""', "~", "null"])
def test_an_empty_or_null_value_means_any_value(tmp_path: Path, value: str) -> None:
    # As envoyproxy/ratelimit reads it: an empty value is no value, a key matching any value.
    path = tmp_path / "rl.yaml"
    path.write_text("domain: edge\ndescriptors:\n"
                    f"  - key: tenant\n    value: {value}\n"
                    "    rate_limit: {unit: second, requests_per_unit: 5}\n")
    root = load_domains([str(path)])["edge"]
    assert root.child("tenant", "acme") is root.any_value["tenant"]


def test_a_file_nested_too_deeply_is_an_error_naming_it(tmp_path: Path) -> None:
    # Before: the YAML parser's RecursionError escaped, a traceback from check-config and serve.
    path = tmp_path / "rl.yaml"
    path.write_text("[" * 5000 + "\n")
    with pytest.raises(ConfigError) as error:
        load_domains([str(path)])
    assert error.value.issues == [f"{path}: nested too deeply"]


def test_a_file_that_is_not_utf8_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "rl.yaml"
    path.write_bytes(b"domain: \xff\xfe\n")
    with pytest.raises(ConfigError) as error:
        load_domains([str(path)])
    assert error.value.issues == [
        f"{path}: cannot read rate-limit config: 'utf-8' codec can't decode byte 0xff in "
        "position 8: invalid start byte"]


def test_check_config_reports_a_deep_file_and_exits_2(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TG_QUOTA_TEST_SECRET", "x" * 40)
    (tmp_path / "rl.yaml").write_text("[" * 5000 + "\n")
    config = tmp_path / "tenantgate.yaml"
    config.write_text("context:\n  active_key: k1\n"
                      "  keys: [{id: k1, secret: {fromEnv: TG_QUOTA_TEST_SECRET}}]\n"
                      "quota:\n  enabled: true\n"
                      "  ratelimit_service: {config_files: [rl.yaml]}\n")
    assert main(["check-config", str(config)]) == 2
    assert capsys.readouterr().err == f"{config}: {tmp_path / 'rl.yaml'}: nested too deeply\n"


@pytest.mark.parametrize(("node", "where"), [
    ("value: [GET, POST]", "descriptors[0].value: must be a string, not a list or mapping"),
    ("value: {a: 1}", "descriptors[0].value: must be a string, not a list or mapping"),
    ("rate_limit: {unit: second, requests_per_unit: 5, name: [a]}",
     "descriptors[0].rate_limit.name: must be a string, not a list or mapping"),
    ("rate_limit: {unit: second, requests_per_unit: 5, name: {a: 1}}",
     "descriptors[0].rate_limit.name: must be a string, not a list or mapping"),
    ("rate_limit: {unit: second, requests_per_unit: 5, name: []}",
     "descriptors[0].rate_limit.name: must be a string, not a list or mapping"),
])
def test_a_value_or_name_that_is_not_a_scalar_is_an_error(tmp_path: Path, node: str,
                                                          where: str) -> None:
    # Its Python repr ("['GET', 'POST']") was the value, which no request ever sends; Go's
    # yaml, which envoyproxy/ratelimit reads these into strings with, refuses it too.
    path = tmp_path / "rl.yaml"
    path.write_text(f"domain: edge\ndescriptors:\n  - key: method\n    {node}\n")
    with pytest.raises(ConfigError) as error:
        load_domains([str(path)])
    assert error.value.issues == [f"{path}: {where}"]


@pytest.mark.parametrize(("written", "name"), [("1.10", "1.10"), ("true", "true"),
                                               ("writes", "writes"), ("~", ""), ('""', "")])
def test_a_limit_name_is_read_as_written(tmp_path: Path, written: str, name: str) -> None:
    # As envoyproxy/ratelimit reads it (Go yaml into a string): a null name is no name, not
    # "None", and `true` is not "True".
    path = tmp_path / "rl.yaml"
    path.write_text("domain: edge\ndescriptors:\n  - key: tenant\n    rate_limit: "
                    f"{{unit: second, requests_per_unit: 5, name: {written}}}\n")
    limit = load_domains([str(path)])["edge"].any_value["tenant"].limit
    assert limit is not None and limit.name == name
