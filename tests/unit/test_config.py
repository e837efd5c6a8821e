"""Config validation: each fixture in tests/fixtures/config holds one mistake, and its
`.expected` sibling the exact message (key path first) that check-config must print."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from google.protobuf.duration_pb2 import Duration
from tenantgate.config.linear_regex import compile_linear
from tenantgate.config.load import load_config, parse_config
from tenantgate.config.model import (
    DEFAULT_ALGORITHMS,
    DEFAULT_TENANT_PATTERN,
    PolicyConfig,
    RouteConfig,
    not_admitted,
)
from tenantgate.config.redis_url import redis_hosts
from tenantgate.config.types import DURATION_MAX_SECONDS
from tenantgate.errors import ConfigError
from tenantgate.policy import compile_routes, find_route
from tenantgate.tenancy import TenantRules

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
    # Not listen.drain_timeout, used before: it takes at most 1h.
    config = parse_config((FIXTURES / "valid.yaml").read_text() + (
        f"quota:\n  store: redis\n  redis: {{circuit: {{open_for: {text}}}}}\n"))
    assert config.quota.redis.circuit.open_for == seconds


def test_the_longest_duration_is_where_google_protobuf_duration_ends() -> None:
    # One bound for every Duration tenantgate writes (envoy-config timeouts, RLS resets).
    assert Duration(seconds=DURATION_MAX_SECONDS).ToJsonString() == "315576000000s"
    with pytest.raises(ValueError, match="must be in range"):
        Duration(seconds=DURATION_MAX_SECONDS + 1).ToJsonString()


def test_several_mistakes_are_all_reported_each_with_its_path() -> None:
    text = (FIXTURES / "valid.yaml").read_text().replace("  grpc: 127.0.0.1:9001\n",
                                                         "  grpc: nowhere\n  colour: red\n")
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert caught.value.issues == ["listen.grpc: must be host:port with a port up to 65535, e.g. "
                                    "127.0.0.1:9001",
                                   "listen.colour: unknown key"]


def test_keys_are_read_as_written() -> None:
    # YAML 1.1 would make `0123` the octal 83 and `yes` True: a tenant id is the text written.
    text = (FIXTURES / "valid.yaml").read_text().replace(
        "    acme: {plan: null}\n", "    acme: {plan: null}\n    0123: {}\n    yes: {}\n")
    assert list(parse_config(text).tenants.registry) == ["acme", "0123", "yes"]


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


def issues(extra: str) -> list[str]:
    try:
        parse_config((FIXTURES / "valid.yaml").read_text() + extra)
    except ConfigError as exc:
        return exc.issues
    return []


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", "1" + "0" * 400])
@pytest.mark.parametrize("key", ["timeout", "connect_timeout", "circuit: {open_for"])
def test_durations_must_be_finite(key: str, value: str) -> None:
    # NaN passes every `<` check and inf never ends; a 400-digit int does not fit a float.
    closing = "}" if "{" in key else ""
    found = issues(f"quota:\n  redis: {{{key}: {value}{closing}}}\n")
    path = "quota.redis.circuit.open_for" if "circuit" in key else f"quota.redis.{key}"
    assert found == [f"{path}: must be a finite duration such as 30s, 500ms, 5m"]


@pytest.mark.parametrize(("url", "problem"), [
    ("redis://localhost:notaport/0",
     "port 'notaport' in 'localhost:notaport' must be a number from 1 to 65535"),
    ("redis://localhost:0/0", "port '0' in 'localhost:0' must be a number from 1 to 65535"),
    ("rediss://h:65536", "port '65536' in 'h:65536' must be a number from 1 to 65535"),
    ("redis://h:6379/one", "the database number must be a whole number, got 'one'"),
    ("redis://h:6379/0?db=x", "the database number must be a whole number, got 'x'"),
    ("redis://h:6379/0/1", "the url's path is the database number only, e.g. /0"),
    ("redis://h:6379/0?protocol=x", "Invalid value for 'protocol' in connection URL."),
    ("unix:///run/redis.sock?db=-1", "the database number must be a whole number, got '-1'"),
    ("redis+sentinel://h:26379/mymaster/x",
     "the database number must be a whole number, got 'x'"),
    # SELECT takes a 32-bit int: these passed, and every connection's handshake failed.
    ("redis://h:6379/99999999999999999999",
     "the database number must be at most 2147483647, got '99999999999999999999'"),
    ("redis://h?db=2147483648", "the database number must be at most 2147483647, got "
                                "'2147483648'"),
    ("unix:///run/redis.sock?db=" + "9" * 5000,
     f"the database number must be at most 2147483647, got '{'9' * 5000}'"),
    ("redis+sentinel://h:26379/m/2147483648",
     "the database number must be at most 2147483647, got '2147483648'"),
    ("redis+sentinel://h:26379/", "a sentinel url names the master: "
                                  "redis+sentinel://host:port/mymaster"),
    ("redis+sentinel://h:26379/m/0/1", "a sentinel url's path is /master or /master/db"),
    ("redis+cluster://h:abc", "port 'abc' in 'h:abc' must be a number from 1 to 65535"),
    ("redis+cluster://h1:7000,,h2:7001", "every entry of the host list needs a host, got ''"),
    ("redis+cluster://[::1]x", "'[::1]x' must be host:port"),
])
def test_a_redis_url_the_client_would_refuse_is_a_config_error(url: str, problem: str) -> None:
    # Before, these passed check-config and `serve` died with redis-py's ValueError.
    assert issues(f"quota:\n  store: redis\n  redis: {{url: '{url}'}}\n") == [
        f"quota.redis.url: {problem}"]


@pytest.mark.parametrize("url", [
    "redis://127.0.0.1:6379/0", "redis://h", "rediss://user:p%40ss@h:6380/15?protocol=3",
    "redis://[::1]:6379/2", "unix:///run/redis.sock?db=3", "redis+sentinel://h1,h2:26380/m/1",
    "redis+cluster://h1:7000,[::1]:7001", "rediss+cluster://h1", "redis://[::1]/0",
    "redis+cluster://[::1]", "redis+sentinel://[::1],[::2]:26379/mymaster",
    "redis://h/2147483647", "redis://h/0002147483647"])
def test_redis_urls_the_client_accepts_still_pass(url: str) -> None:
    assert issues(f"quota:\n  store: redis\n  redis: {{url: '{url}'}}\n") == []


@pytest.mark.parametrize(("netloc", "hosts"), [
    ("h1,h2:26380", [("h1", 26379), ("h2", 26380)]),
    ("[::1],[::2]:26380", [("::1", 26379), ("::2", 26380)]),
    ("user:p%40ss@[fe80::1]", [("fe80::1", 26379)]),
])
def test_a_host_list_entry_without_a_port_gets_the_default_port(
        netloc: str, hosts: list[tuple[str, int]]) -> None:
    # Before, a bracketed IPv6 entry without a port was refused where a hostname was not.
    assert redis_hosts(netloc, 26379) == hosts


def test_an_unclosed_ipv6_bracket_in_a_host_list_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^'\[::1' must be host:port$"):
        redis_hosts("[::1,[::2]:7001", 6379)


def test_api_key_redis_url_ports_are_checked_too() -> None:
    found = issues("api_keys:\n  hash_secret: {fromEnv: TG_TEST_CONTEXT_KEY}\n"
                   "  redis_url: redis://localhost:notaport/0\n")
    assert found == ["api_keys.redis_url: port 'notaport' in 'localhost:notaport' must be a "
                     "number from 1 to 65535"]


def test_max_token_age_zero_is_refused() -> None:
    text = (FIXTURES / "valid.yaml").read_text().replace(
        "    tenants: [acme]\n", "    tenants: [acme]\n    max_token_age: 0s\n")
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert caught.value.issues == ["issuers[1].max_token_age: Input should be greater than 0"]


def test_a_relative_socket_path_is_relative_to_the_config_file(tmp_path: Path) -> None:
    # As the reference says of every file path; before, it was relative to the working
    # directory of `serve`, and envoy-config wrote it relative for Envoy's own directory.
    text = (FIXTURES / "valid.yaml").read_text().replace(
        "  metrics: null\n", "  metrics: null\n  uds: run/authz.sock\n")
    assert parse_config(text, base_dir=tmp_path).listen.uds == str(tmp_path / "run/authz.sock")
    absolute = text.replace("run/authz.sock", "/run/tenantgate/authz.sock")
    assert parse_config(absolute, base_dir=tmp_path).listen.uds == "/run/tenantgate/authz.sock"


@pytest.mark.parametrize("value", ["2147483648", "99999999999999999999999"])
def test_max_concurrent_rpcs_beyond_grpcs_c_int_is_a_config_error(value: str) -> None:
    # Before, check-config said ok and serve died in grpc.aio.server() with an OverflowError.
    text = (FIXTURES / "valid.yaml").read_text().replace(
        "  metrics: null\n", f"  metrics: null\n  max_concurrent_rpcs: {value}\n")
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert caught.value.issues == [
        "listen.max_concurrent_rpcs: Input should be less than or equal to 2147483647"]


@pytest.mark.parametrize(("route", "problem"), [
    # A prefix is literal: this rule never matched, so /admin/users fell to the default allow.
    ("{path_prefix: /admin/*, roles: [admin]}",
     "path_prefix is a literal prefix (segment-aware); for *, ** or {tenant} use path"),
    ("{path_prefix: '/api/**', scopes: [write]}",
     "path_prefix is a literal prefix (segment-aware); for *, ** or {tenant} use path"),
    # ** ended matching where it stood: {tenant} after it was never bound (no 404 across
    # tenants) and the rule covered all of /api.
    ("{path: '/api/**/tenants/{tenant}'}",
     "** matches the rest of the path: it may only be the last segment"),
    ("{path: '/files/*.pdf', action: deny}",
     "segment '*.pdf': *, ** and {tenant} stand for whole segments"),
    ("{path: '/orgs/{org}/notes'}", "segment '{org}': *, ** and {tenant} stand for whole "
                                    "segments"),
    # An empty list read as "any method".
    ("{path: /admin, methods: [], roles: [admin]}",
     "methods: list at least one (leave methods out for any method)"),
    # Only a spelled-out ":" makes Check refuse `%3A` in paths; this rule matched neither form.
    ("{path: '/tenants/{tenant}/jobs%3acancel', action: deny}",
     "write ':' as itself, not as %3A"),
    ("{path_prefix: '/users/me%40home', action: deny}", "write '@' as itself, not as %40"),
    ("{path: '/files/%5bdraft%5d', action: deny}", "write '[' as itself, not as %5B"),
    # Envoy escapes these (or refuses them raw): Check only ever sees `caf%C3%A9`, `a%20b`.
    ("{path: '/files/café', action: deny}", "write 'é' as %C3%A9, as Envoy passes it to Check"),
    ("{path_prefix: '/files/a b', action: deny}", "write ' ' as %20, as Envoy passes it to Check"),
    ("{path: '/files/a|b', action: deny}", "write '|' as %7C, as Envoy passes it to Check"),
    ("{path: '/search?admin=1', action: deny}", "'?' is never part of a path Check matches"),
    ("{path_prefix: '/admin;v=1', action: deny}", "';' is never part of a path Check matches"),
    # Check refuses paths holding these (Envoy normalizes them away): a deny rule became the
    # default allow.
    ("{path_prefix: '/api//admin', action: deny}", "'//': Envoy normalizes paths before Check, "
     "and Check refuses a path holding this, so the rule would never apply"),
    ("{path: '/a/./b', action: deny}", "'/./': Envoy normalizes paths before Check, "
     "and Check refuses a path holding this, so the rule would never apply"),
    ("{path_prefix: '/%69nternal', action: deny}", "'%69': Envoy normalizes paths before "
     "Check, and Check refuses a path holding this, so the rule would never apply"),
    ("{path: '/internal%0A', action: deny}", "'%0A': Envoy normalizes paths before Check, "
     "and Check refuses a path holding this, so the rule would never apply"),
    # Methods are compared as written: these matched no request.
    ("{path_prefix: /internal, methods: ['*'], action: deny}",
     "methods: '*' is not one HTTP method (leave methods out for any method)"),
    ("{path_prefix: /internal, methods: ['GET,POST'], action: deny}",
     "methods: 'GET,POST' is not one HTTP method (leave methods out for any method)"),
    ("{path_prefix: /internal, methods: ['GET POST'], action: deny}",
     "methods: 'GET POST' is not one HTTP method (leave methods out for any method)"),
], ids=["prefix-star", "prefix-double-star", "double-star-inside", "glob-in-segment",
        "other-placeholder", "methods-empty", "escaped-colon", "escaped-at-in-prefix",
        "escaped-bracket", "non-ascii", "space", "pipe", "query", "path-parameter",
        "empty-segment", "dot-segment", "escaped-letter", "escaped-newline", "method-star",
        "methods-in-one-string", "methods-with-space"])
def test_a_route_pattern_that_would_not_match_as_written_is_refused(
        route: str, problem: str) -> None:
    assert route_issues(route) == [f"policy.routes[1]: {problem}"]


def route_issues(route: str) -> list[str]:
    first = "    - path: /tenants/{tenant}/**\n"
    text = (FIXTURES / "valid.yaml").read_text().replace(first, f"{first}    - {route}\n")
    try:
        parse_config(text)
    except ConfigError as exc:
        return exc.issues
    return []


@pytest.mark.parametrize("route", [
    "{path: '/orgs/{tenant}/**'}", "{path: '/a/*/b'}", "{path: /}", "{path: '/**'}",
    "{path_prefix: /admin/}", "{path: /a, methods: [GET]}"])
def test_route_patterns_as_documented_still_pass(route: str) -> None:
    assert route_issues(route) == []


def test_the_rejected_token_cache_defaults_to_ten_thousand_entries_for_a_minute() -> None:
    credentials = load_config(FIXTURES / "valid.yaml").credentials
    assert (credentials.rejected_token_cache_entries,
            credentials.rejected_token_cache_ttl) == (10_000, 60.0)
    text = "credentials:\n  rejected_token_cache_entries: 0\n  rejected_token_cache_ttl: 1h\n"
    assert issues(text) == []


@pytest.mark.parametrize(("setting", "problem"), [
    ("rejected_token_cache_entries: -1", "Input should be greater than or equal to 0"),
    ("rejected_token_cache_ttl: 500ms", "Input should be greater than or equal to 1"),
    ("rejected_token_cache_ttl: 2h", "Input should be less than or equal to 3600"),
    ("rejected_token_cache_ttl: soon", "must be a duration such as 30s, 500ms, 5m"),
], ids=["entries-negative", "ttl-under-1s", "ttl-over-1h", "ttl-not-a-duration"])
def test_rejected_token_cache_settings_out_of_bounds_name_their_key_path(
        setting: str, problem: str) -> None:
    key = setting.partition(":")[0]
    assert issues(f"credentials:\n  {setting}\n") == [f"credentials.{key}: {problem}"]


@pytest.mark.parametrize("ttl", ["0s", "500ms", "4s"])
def test_a_context_ttl_under_five_seconds_is_refused(ttl: str) -> None:
    # It could expire in transit, or on a backend whose clock runs a little ahead.
    text = (FIXTURES / "valid.yaml").read_text().replace(
        "context:\n", f"context:\n  ttl: {ttl}\n", 1)
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert caught.value.issues == ["context.ttl: Input should be greater than or equal to 5"]


@pytest.mark.parametrize("route", ["{path_prefix: '/a%EF%BC%8Fb', action: deny}",
                                   "{path: '/files/%E2%80%A5/x', action: deny}",
                                   "{path_prefix: '/admin%20', action: deny}"],
                         ids=["fullwidth-solidus", "two-dot-leader", "trailing-space"])
def test_a_route_escaping_what_check_refuses_is_refused(route: str) -> None:
    # Check refuses a path holding such an escape (config.paths): the rule would never apply.
    assert route_issues(route) == [
        "policy.routes[1]: an escaped character here folds (NFKC) into path syntax (`/`, `.`, "
        "`..`, `\\`, `?`, `#`, `;` or `%`), or is a space or invisible character ending a "
        "segment: Check refuses such a path, so the rule would never apply"]


def replaced_issues(old: str, new: str) -> list[str]:
    """The issues of the base fixture with `old` replaced by `new`."""
    text = (FIXTURES / "valid.yaml").read_text()
    assert old in text
    try:
        parse_config(text.replace(old, new))
    except ConfigError as exc:
        return exc.issues
    return []


def policy_issues(*routes: str) -> list[str]:
    return replaced_issues("    - path: /tenants/{tenant}/**\n",
                           "".join(f"    - {route}\n" for route in routes))


@pytest.mark.parametrize("routes", [
    # The first match wins: GET /api/admin/users was allowed by rule 0.
    ("{path_prefix: /api}", "{path_prefix: /api/admin, action: deny}"),
    ("{path_prefix: /API/}", "{path_prefix: /api, methods: [DELETE], action: deny}"),
    ("{path: '/api/**'}", "{path_prefix: /api/admin, action: deny}"),
    ("{path_prefix: /api, methods: [GET, POST]}", "{path_prefix: /api/admin, methods: [post]}"),
    ("{path_prefix: /reports, methods: [GET]}", "{path_prefix: /reports, methods: [HEAD]}"),
    ("{path_prefix: /tenants}", "{path: '/tenants/{tenant}/**'}"),  # no 404 across tenants
    ("{path_prefix: /}", "{path: '/*/x'}"),
    ("{path: '/t/{tenant}/*'}", "{path: '/t/{tenant}/*', methods: [GET], action: deny}"),
], ids=["prefix-under-prefix", "same-prefix-other-case", "double-star-as-prefix",
        "fewer-methods", "head-after-get", "tenant-pattern-under-prefix", "everything",
        "identical-patterns"])
def test_a_route_an_earlier_route_always_takes_is_refused(routes: tuple[str, str]) -> None:
    assert policy_issues("{path: /health}", *routes) == [
        "policy.routes[2]: never applies: routes[1] comes first and matches every method and "
        "path this rule does (the first matching rule applies): put this rule before it"]


@pytest.mark.parametrize("routes", [
    ("{path_prefix: /api/admin, action: deny}", "{path_prefix: /api}"),
    ("{path_prefix: /api}", "{path_prefix: /apix}"),
    ("{path_prefix: /api, methods: [GET]}", "{path_prefix: /api/admin, action: deny}"),
    ("{path_prefix: /api, methods: [GET]}", "{path_prefix: /api, methods: [GET, DELETE]}"),
    ("{path: '/api/*'}", "{path_prefix: /api/admin, action: deny}"),  # not /api/admin/x
    ("{path: '/t/*/x'}", "{path: '/t/a/x', action: deny}"),  # possibly covered: not flagged
    ("{path_prefix: /api/admin}", "{path: '/api/*/users'}"),
    ("{path: /api}", "{path_prefix: /api}"),
], ids=["narrow-first", "longer-name", "other-methods", "more-methods", "single-star",
        "wildcard-pattern", "pattern-beyond-prefix", "exact-then-prefix"])
def test_routes_an_earlier_route_does_not_always_take_still_pass(routes: tuple[str, str]) -> None:
    assert policy_issues(*routes) == []


NO_TENANT_ID = ("no tenant id is this (1 to 255 characters of A-Z a-z 0-9 "
                "!#$%&()*+-./:<=>?@[]^_{|}~)")
NOT_ADMITTED = "tenants.pattern does not admit this tenant id"


@pytest.mark.parametrize(("registry", "key", "why"), [
    ("    ACME: {}\n", "ACME", NOT_ADMITTED), ("    \"a b\": {}\n", "a b", NO_TENANT_ID),
    ("    x: {}\n", None, None), ("    \"acme\\x01\": {}\n", '"acme\\u0001"', NO_TENANT_ID),
], ids=["upper-case", "space", "admitted", "control-character"])
def test_a_registry_tenant_the_pattern_never_admits_is_refused(
        registry: str, key: str | None, why: str | None) -> None:
    # tenancy refuses such an id before the registry is read: the entry could never apply.
    # (A key with a control character is shown quoted and escaped.)
    found = replaced_issues("tenants:\n  registry:\n",
                            f"tenants:\n  pattern: '^[a-z\\x01]+$'\n  registry:\n{registry}")
    assert found == ([] if key is None else [
        f"tenants.registry.{key}: {why}, so no request could ever act for it"])


def issuer_tenants_issues(tenants: str) -> list[str]:
    return replaced_issues("    tenants: [acme]\n", f"    tenants: {tenants}\n")


def test_an_issuer_that_may_speak_for_no_tenant_is_refused() -> None:
    assert issuer_tenants_issues("[]") == [
        "issuers[1].tenants: list at least one tenant: an issuer that may speak for none would "
        "have every token refused"]


@pytest.mark.parametrize(("tenants", "problem"), [
    ("[acme, Globex]", f"issuers[1].tenants[1]: 'Globex': {NOT_ADMITTED}"),
    ("['acme eu']", f"issuers[1].tenants[0]: 'acme eu': {NO_TENANT_ID}"),
    ("[acme, globex]", None),
], ids=["upper-case", "space", "admitted"])
def test_an_issuer_tenant_the_pattern_never_admits_is_refused(
        tenants: str, problem: str | None) -> None:
    assert issuer_tenants_issues(tenants) == ([] if problem is None else [
        f"{problem}, so the issuer could never speak for it"])


@pytest.mark.parametrize("setting", ["refetch_interval: 0s", "refetch_interval: 200ms",
                                     "max_ttl: 0s", "default_ttl: 0s"])
def test_jwks_intervals_that_would_fetch_per_request_are_refused(setting: str) -> None:
    # refetch_interval 0: every token with a new kid (anyone can send one) fetched the JWKS.
    key = setting.partition(":")[0]
    found = replaced_issues("      url: https://idp.example/jwks.json\n",
                            f"      url: https://idp.example/jwks.json\n      {setting}\n")
    assert found == [f"issuers[0].jwks.{key}: Input should be greater than or equal to 1"]


@pytest.mark.parametrize("setting", ["min_ttl: 0s", "max_stale: 0s", "refetch_interval: 1s",
                                     "max_ttl: 1m"])
def test_jwks_bounds_kept_at_run_time_still_pass(setting: str) -> None:
    # min_ttl 0 honours an IdP's max-age=0 and max_stale 0 trusts no stale key: KeySet still
    # refreshes at most once a second.
    assert replaced_issues("      url: https://idp.example/jwks.json\n",
                           f"      url: https://idp.example/jwks.json\n      {setting}\n") == []


def public_key_pem() -> str:
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    public = ec.generate_private_key(ec.SECP256R1()).public_key()
    return public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode().strip()


@pytest.mark.parametrize("secret", [
    public_key_pem(), "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7" + "x" * 64,
    '{"kty": "oct", "k": "' + "a" * 64 + '"}'],
    ids=["pem-public-key", "ssh-public-key", "jwk"])
def test_an_hs_secret_pyjwt_refuses_is_a_config_error_that_does_not_echo_it(
        secret: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # check-config passed it, and serve (or a reload) died in hmac_key with a traceback.
    monkeypatch.setenv("TG_TEST_HS_SECRET", secret)
    found = replaced_issues("    jwks:\n      inline: {keys: []}\n",
                            "    algorithms: [HS256]\n"
                            "    hs_secret: {fromEnv: TG_TEST_HS_SECRET}\n")
    assert found == ["issuers[1].hs_secret: PyJWT refuses this as an HMAC secret: it looks like "
                     "an asymmetric key or certificate (PEM, SSH or DER) or a JWK; use random "
                     "bytes instead"]


def test_a_random_hs_secret_still_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TG_TEST_HS_SECRET", "r4nd0m-" * 10)
    assert replaced_issues("    jwks:\n      inline: {keys: []}\n",
                           "    algorithms: [HS256]\n"
                           "    hs_secret: {fromEnv: TG_TEST_HS_SECRET}\n") == []


def test_an_hs_secret_that_is_also_a_context_key_is_refused() -> None:
    # Both are HS256 keys: whoever mints the issuer's tokens (its IdP, every holder of the
    # secret) could sign a tenant context for any tenant, which Postgres would accept.
    found = replaced_issues("    jwks:\n      inline: {keys: []}\n",
                            "    algorithms: [HS256]\n"
                            "    hs_secret: {fromEnv: TG_TEST_CONTEXT_KEY}\n")
    assert found == ["issuers[1].hs_secret: is also context.keys[0].secret (c1): whoever mints "
                     "this issuer's tokens could sign a tenant context for any tenant; give "
                     "each its own secret"]


ADMIN_ON_A_SOCKET = ("api_keys:\n  hash_secret: {fromEnv: TG_TEST_CONTEXT_KEY}\n"
                     "admin:\n  listen: LISTEN\n  token: {fromEnv: TG_TEST_CONTEXT_KEY}\n")


@pytest.mark.parametrize(("listen", "expected"), [
    ("unix:run/admin.sock", "unix:{dir}/run/admin.sock"),
    ("unix:/run/tg/admin.sock", "unix:/run/tg/admin.sock"),
    ("unix:///run/tg/admin.sock", "unix:///run/tg/admin.sock"),
], ids=["relative", "absolute", "url-form"])
def test_a_relative_admin_socket_is_relative_to_the_config_file(
        tmp_path: Path, listen: str, expected: str) -> None:
    # As listen.uds and every file path: it was relative to the directory serve ran in.
    text = (FIXTURES / "valid.yaml").read_text() + ADMIN_ON_A_SOCKET.replace("LISTEN", listen)
    admin = parse_config(text, base_dir=tmp_path).admin
    assert admin is not None and admin.listen == expected.format(dir=tmp_path)


def test_an_admin_socket_without_a_path_is_refused() -> None:
    assert issues(ADMIN_ON_A_SOCKET.replace("LISTEN", "'unix:'")) == [
        "admin.listen: unix:PATH needs a socket path"]


@pytest.mark.parametrize(("old", "new", "expected"), [
    ("    acme: {plan: null}\n", "    acme: {stauts: active}\n",
     "tenants.registry.acme.stauts: unknown key (did you mean 'status'?)"),
    ("    acme: {plan: null}\n", "    acme: {overrides: {brust: 3}}\n",
     "tenants.registry.acme.overrides.brust: unknown key (did you mean 'burst'?)"),
    ("audit:\n", "quota:\n  plans:\n    free: {limts: ['1/s']}\naudit:\n",
     "quota.plans.free.limts: unknown key (did you mean 'limits'?)"),
], ids=["registry-entry", "registry-overrides", "quota-plan"])
def test_unknown_keys_under_named_entries_get_a_suggestion(
        old: str, new: str, expected: str) -> None:
    # The key after a mapping (a tenant or plan name) was looked up as a field: no suggestion.
    assert replaced_issues(old, new) == [expected]


def test_an_empty_registry_tenant_id_is_refused_though_the_pattern_admits_it() -> None:
    # tenancy refuses an empty id (1 to 255 characters) whatever the pattern says.
    found = replaced_issues("tenants:\n  registry:\n",
                            "tenants:\n  pattern: '^[a-z]*$'\n  registry:\n    '': {}\n")
    assert found == [f'tenants.registry."": {NO_TENANT_ID}, so no request could ever act for it']


@pytest.mark.parametrize("pattern", ["(?s).*", "^[a-z]*$", DEFAULT_TENANT_PATTERN])
def test_load_time_tenant_id_checks_agree_with_tenancy(pattern: str) -> None:
    config = load_config(FIXTURES / "valid.yaml")
    # model_copy skips validation: "(?s).*" leaves only the fixed alphabet tenancy enforces.
    rules = TenantRules(config.model_copy(
        update={"tenants": config.tenants.model_copy(update={"pattern": pattern})}))
    probes = ["", "a" * 255, "a" * 256, "acme", *map(chr, range(0x80)), "\u00e9", "a\u00a0b"]
    compiled = compile_linear(pattern)  # as the config's own checks compile it
    assert [not_admitted(compiled, p) is None for p in probes] == [
        rules.valid_id(p) for p in probes]


TENANT_RULE_AFTER_GET_PREFIX = ("{path_prefix: /t, methods: [GET]}",
                                "{path: '/t/{tenant}/notes', methods: [GET]}")


def test_a_tenant_rule_whose_methods_an_earlier_rule_takes_is_refused_as_not_dead() -> None:
    # Not "never applies": for DELETE it still 404s another tenant's path, and deleting it as
    # dead would let that DELETE through.
    assert policy_issues("{path: /health}", *TENANT_RULE_AFTER_GET_PREFIX) == [
        "policy.routes[2]: routes[1] comes first and takes every request with a method this "
        "rule lists (the first matching rule applies): for those, routes[1] decides even another "
        "tenant's path (no 404) and this rule's checks never run; for other methods this rule "
        "does answer another tenant's path with 404, so keep it: put it before routes[1]"]


def test_the_tenant_rule_message_says_what_policy_does() -> None:
    routes = [RouteConfig.model_validate(yaml.safe_load(r)) for r in TENANT_RULE_AFTER_GET_PREFIX]
    table = compile_routes(PolicyConfig.model_construct(routes=routes))  # the refused order
    for method, index, bound in [("GET", 0, None), ("HEAD", 0, None), ("DELETE", 1, "globex")]:
        found = find_route(table, {}, method, "/t/globex/notes", "acme")
        assert found is not None and found[0] is not None
        assert (found[0].index, found[1]) == (index, bound), method  # 1, "globex": a 404


@pytest.mark.parametrize("routes", [
    ("{path_prefix: /t}", "{path: '/t/{tenant}/notes', methods: [GET]}"),
    ("{path: '/t/{tenant}/notes', methods: [GET, DELETE]}",
     "{path: '/t/{tenant}/notes', methods: [DELETE], action: deny}"),
], ids=["earlier-takes-every-method", "earlier-binds-the-tenant-too"])
def test_a_tenant_rule_an_earlier_rule_takes_whatever_the_method_never_applies(
        routes: tuple[str, str]) -> None:
    assert policy_issues("{path: /health}", *routes) == [
        "policy.routes[2]: never applies: routes[1] comes first and matches every method and "
        "path this rule does (the first matching rule applies): put this rule before it"]
