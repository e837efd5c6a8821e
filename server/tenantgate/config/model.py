"""The typed configuration: frozen models with every default written once, here."""

from __future__ import annotations

import hmac
import itertools
import os
import re
from typing import Literal

from jwt.algorithms import HMACAlgorithm
from jwt.exceptions import InvalidKeyError
from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from tenantgate.config.addresses import (
    check_grpc_host_given,
    check_host_port,
    check_socket_path_length,
    grpc_unix_path,
)
from tenantgate.config.apikeys import AdminConfig, ApiKeysConfig, check_ipv6_bracketed
from tenantgate.config.files import config_file_path
from tenantgate.config.linear_regex import Matcher, compile_linear
from tenantgate.config.paths import check_path_pattern, fold
from tenantgate.config.quota import PlanOverrides, QuotaConfig
from tenantgate.config.tls import TlsConfig
from tenantgate.config.types import (
    ByteSize,
    Count,
    Duration,
    Flag,
    HeaderName,
    Model,
    Number,
    Secret,
    check_stop_wait,
    is_one_method,
)
from tenantgate.context import MIN_KEY_BYTES, key_id_problem

ASYMMETRIC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                         "ES256", "ES384", "ES512", "EdDSA")
HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
DEFAULT_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA")
DEFAULT_TENANT_PATTERN = r"^[a-z0-9_-]{1,63}$"
# Characters no tenant pattern may ever admit: they could split a header, a log line or SQL.
# The non-ASCII ones are probes (Latin, Cyrillic, Greek, CJK, fullwidth, no-break space):
# tenancy refuses every non-ASCII id at run time, so a pattern admitting one would load
# clean and then deny that tenant's every request.
FORBIDDEN_TENANT_CHARS = ("\x00\t\n\r\x0b\x0c \"'`,;\\\x7f"
                          "\u00e9\u00df\u0430\u03b1\u4e2d\uff21\u00a0\u2028\ufeff")


def error_at(loc: tuple[int | str, ...], message: str) -> ValidationError:
    """A check across the items of a field, located at one of them: pydantic puts the
    validated field's own path before `loc` (`policy.routes[1]`, not `policy.routes`)."""
    return ValidationError.from_exception_data("Config", [
        {"type": "value_error", "loc": loc, "input": None, "ctx": {"error": ValueError(message)}}])


# A tenant id whatever the configured pattern says (tenancy applies it to every claim):
# printable ASCII without space, quotes, backslash, comma or semicolon, 1 to 255 characters, so
# a tenant id can never split a header, log line or SQL.
MAX_TENANT_ID_CHARS = 255
ALWAYS_SAFE_TENANT_ID = re.compile(
    rf"[A-Za-z0-9!#$%&()*+\-./:<=>?@\[\]^_{{|}}~]{{1,{MAX_TENANT_ID_CHARS}}}")


def first_repeated(values: list[str]) -> str | None:
    """The first, in sorted order, of the values listed more than once; None if none is."""
    return min((v for v in values if values.count(v) > 1), default=None)


def not_admitted(pattern: Matcher, tenant_id: str) -> str | None:
    """Why tenancy refuses `tenant_id` as an id, or None."""
    if not ALWAYS_SAFE_TENANT_ID.fullmatch(tenant_id):
        return ("no tenant id is this (1 to 255 characters of A-Z a-z 0-9 "
                "!#$%&()*+-./:<=>?@[]^_{|}~)")
    return None if pattern.fullmatch(tenant_id) else "tenants.pattern does not admit this tenant id"


class ListenConfig(Model):
    grpc: str | None = "127.0.0.1:9001"
    uds: str | None = None
    metrics: str | None = "127.0.0.1:9090"
    drain_timeout: Duration = 10.0
    # On SIGTERM, health says NOT_SERVING this long while Checks are still answered, so callers
    # that watch health (or a load balancer) move away before new calls are refused.
    shutdown_delay: Duration = 0.0
    uvloop: Flag = True
    max_concurrent_rpcs: Count | None = Field(default=None, ge=1, le=2**31 - 1)  # a C int in gRPC
    # TLS on listen.grpc, mTLS with client_ca. Not on listen.uds: a local socket, guarded by
    # its file mode, where TLS would protect nothing a reader of the socket could not read.
    tls: TlsConfig | None = None
    # grpc.health.v1 alone, in plaintext: for probes that speak no TLS (Kubernetes' gRPC ones).
    health: str | None = None

    @model_validator(mode="after")
    def _one_listener(self) -> ListenConfig:
        if not self.grpc and not self.uds:
            raise ValueError("give at least one of grpc (host:port) or uds (socket path)")
        if self.tls is not None and not self.grpc:
            raise error_at(("tls",), "applies to listen.grpc only, and listen.grpc is not set "
                                     "(listen.uds is a local socket, served without TLS)")
        return self

    @field_validator("drain_timeout", "shutdown_delay")
    @classmethod
    def _stop_wait(cls, value: float) -> float:
        return check_stop_wait(value)

    @field_validator("grpc", "metrics", "health")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        return check_host_port(value) if value is not None else None

    @field_validator("grpc", "health")
    @classmethod
    def _grpc_host_given(cls, value: str | None) -> str | None:
        # gRPC reads `::1:9001` as one IPv6 address on port 443, not as [::1]:9001.
        return check_ipv6_bracketed(check_grpc_host_given(value)) if value is not None else None

    @field_validator("uds")
    @classmethod
    def _relative_to_config(cls, value: str | None, info: ValidationInfo) -> str | None:
        # Like every file path in the config: not relative to whichever directory serve (or
        # Envoy, reading envoy-config's output) happens to run in.
        return check_socket_path_length(config_file_path(value, info)) if value else value


class JwksConfig(Model):
    """Where an issuer's keys come from (exactly one source) and how long they are trusted."""

    url: str | None = None
    discovery: Flag = False
    file: str | None = None
    inline: dict[str, object] | None = None  # a JWK Set: {keys: [...]}
    allow_insecure_http: Flag = False  # development only: plain http JWKS/discovery URLs
    timeout: Duration = Field(default=2.0, gt=0)  # 0: every fetch times out, every token denied
    # 0 may honour an IdP's `max-age=0` (KeySet refreshes at most once a second anyway).
    min_ttl: Duration = 60.0
    # At least 1 s: below, keys would be stale as soon as fetched, whatever the IdP says.
    max_ttl: Duration = Field(default=86400.0, ge=1)
    default_ttl: Duration = Field(default=300.0, ge=1)  # likewise, for an IdP without max-age
    # Unknown kid: at most one refetch per interval. Anyone can send a token with a new kid:
    # under 1 s, the IdP would get a fetch for nearly every such token.
    refetch_interval: Duration = Field(default=30.0, ge=1)
    max_stale: Duration = 3600.0  # endpoint down: known keys keep working this long

    @field_validator("file")
    @classmethod
    def _relative_to_config(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else config_file_path(value, info)

    @field_validator("inline")
    @classmethod
    def _a_key_set(cls, value: dict[str, object] | None) -> dict[str, object] | None:
        # A single JWK or {} would load clean and then refuse every token as unknown_key.
        if value is not None and not isinstance(value.get("keys"), list):
            raise ValueError("must be a JWK Set, an object with a keys list ({keys: [...]})")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> JwksConfig:
        given = [name for name, on in (("url", self.url is not None), ("discovery", self.discovery),
                 ("file", self.file is not None), ("inline", self.inline is not None)) if on]
        if len(given) != 1:
            raise ValueError("give exactly one of url, discovery, file or inline"
                             + (f" (got {', '.join(given)})" if given else ""))
        if self.url is not None:
            scheme = self.url.split("://", 1)[0]
            if scheme != "https" and not (scheme == "http" and self.allow_insecure_http):
                raise ValueError("url must be an https URL (allow_insecure_http: true for dev)")
        if self.min_ttl > self.max_ttl:
            raise ValueError("min_ttl must not exceed max_ttl")
        return self


# The issuer name API-key identities carry: it may speak for the tenant of the key's own
# record, so no JWT issuer may take it.
API_KEY_ISSUER = "api-key"


class IssuerConfig(Model):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    issuer: str = Field(min_length=1)
    audiences: list[str] = Field(min_length=1)
    jwks: JwksConfig | None = None
    hs_secret: Secret | None = None
    algorithms: list[str] = Field(default_factory=lambda: list(DEFAULT_ALGORITHMS))
    tenant_claim: str = "tenant_id"
    tenants: list[str] | None = None
    tenant_pattern: str | None = None
    subject_claim: str = "sub"
    scope_claim: str = "scope"
    roles_claim: str = "roles"
    typ: str | None = None
    leeway: Duration = 30.0
    max_token_age: Duration | None = Field(default=None, gt=0)  # 0 would refuse every token

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value.lower() == API_KEY_ISSUER:
            raise ValueError(f"{API_KEY_ISSUER!r} is reserved for API-key identities")
        return value

    @field_validator("hs_secret")
    @classmethod
    def _usable_hmac_secret(cls, value: Secret | None) -> Secret | None:
        # What identity.keys.hmac_key does at serve: a refusal there was a traceback after a
        # clean check-config. The same checks for every HS* algorithm. Never echo the value.
        try:
            if value is not None:
                HMACAlgorithm(HMACAlgorithm.SHA256).prepare_key(value.value)
        except InvalidKeyError:
            raise ValueError("PyJWT refuses this as an HMAC secret: it looks like an asymmetric "
                             "key or certificate (PEM, SSH or DER) or a JWK; use random bytes "
                             "instead") from None
        return value

    @field_validator("algorithms")
    @classmethod
    def _known_algorithms(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("must list at least one algorithm")
        for alg in value:
            if alg.lower() == "none":
                raise ValueError("'none' is never allowed")
            if alg not in ASYMMETRIC_ALGORITHMS + HMAC_ALGORITHMS:
                raise ValueError(f"unknown algorithm {alg!r}")
        # Each key is prepared once per listed algorithm: a repeat would halve how many
        # distinct keys a token without kid is tried against (MAX_KIDLESS_KEYS).
        if (twice := first_repeated(value)) is not None:
            raise ValueError(f"{twice} is listed twice")
        return value

    @field_validator("tenants")
    @classmethod
    def _speaks_for_some(cls, value: list[str] | None) -> list[str] | None:
        if value == []:
            raise ValueError("list at least one tenant: an issuer that may speak for none "
                             "would have every token refused")
        return value

    @field_validator("tenant_pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            compile_linear(value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> IssuerConfig:
        hmac = [a for a in self.algorithms if a in HMAC_ALGORITHMS]
        if hmac and len(hmac) != len(self.algorithms):
            raise ValueError("never mix HS* and asymmetric algorithms on one issuer")
        if hmac and self.hs_secret is None:
            raise ValueError("HS* algorithms need hs_secret")
        # RFC 7518 3.2: an HMAC key at least as long as the hash (32/48/64 bytes).
        needed = max((int(a[2:]) // 8 for a in hmac), default=0)
        if self.hs_secret is not None and len(self.hs_secret.value) < needed:
            raise ValueError(f"hs_secret must be at least {needed} bytes for "
                             f"{', '.join(hmac)} (RFC 7518 3.2)")
        if hmac and self.jwks is not None:
            raise ValueError("an issuer with public keys (jwks) must not allow HS*")
        if not hmac and self.jwks is None:
            raise ValueError("jwks is required for asymmetric algorithms")
        if not hmac and self.hs_secret is not None:
            raise ValueError("hs_secret is only for HS* algorithms")
        if self.jwks is not None and self.jwks.discovery and not self.issuer.startswith(
                "https://" if not self.jwks.allow_insecure_http else ("https://", "http://")):
            # Whoever answers a plain-http discovery request names the jwks_uri, so the keys.
            raise ValueError("jwks.discovery fetches the issuer's /.well-known/openid-"
                             "configuration: the issuer must be an https URL "
                             "(jwks.allow_insecure_http: true for dev)")
        if (self.tenants is None) == (self.tenant_pattern is None):
            raise ValueError("give exactly one of tenants (list) or tenant_pattern")
        return self


class TenantEntry(Model):
    status: Literal["active", "suspended"] = "active"
    plan: str | None = None
    overrides: PlanOverrides = Field(default_factory=PlanOverrides)  # any plan value, e.g. burst


class TenantsConfig(Model):
    pattern: str = DEFAULT_TENANT_PATTERN
    registry: dict[str, TenantEntry] = Field(default_factory=dict)
    allow_unknown: Flag | None = None  # default: allowed only when the registry is empty

    @field_validator("pattern")
    @classmethod
    def _safe_pattern(cls, value: str) -> str:
        compiled = compile_linear(value)
        if not value.isascii():
            raise ValueError("pattern holds non-ASCII characters, but tenant ids are ASCII "
                             "(ids it admits beyond ASCII would be refused at run time)")
        for char in FORBIDDEN_TENANT_CHARS:
            for probe in (char, f"a{char}", f"{char}a", f"a{char}a", f"0{char}0"):
                if compiled.fullmatch(probe):
                    raise ValueError(f"pattern admits the forbidden character {char!r}")
        return value

    @model_validator(mode="after")
    def _registry_ids_admitted(self) -> TenantsConfig:
        pattern = compile_linear(self.pattern)
        for tenant_id in self.registry:
            if why := not_admitted(pattern, tenant_id):
                raise error_at(("registry", tenant_id),
                               f"{why}, so no request could ever act for it")
        return self

    @property
    def unknown_allowed(self) -> bool:
        return not self.registry if self.allow_unknown is None else self.allow_unknown


class RouteConfig(Model):
    """A route rule: the first rule whose method and path match applies."""

    methods: list[str] | None = None
    path_prefix: str | None = None
    path: str | None = None  # pattern: segments, `*` (one segment), `**` (rest), `{tenant}`
    scopes: list[str] = Field(default_factory=list)
    roles: list[str] = Field(default_factory=list)
    max_body_bytes: ByteSize | None = None
    content_types: list[str] | None = None
    action: Literal["allow", "deny"] = "allow"

    @model_validator(mode="after")
    def _one_path(self) -> RouteConfig:
        if (self.path_prefix is None) == (self.path is None):
            raise ValueError("give exactly one of path_prefix or path")
        target = self.path_prefix or self.path or ""
        if not target.startswith("/"):
            raise ValueError("paths start with /")
        if self.path_prefix is not None and "{tenant}" in self.path_prefix:
            raise ValueError("{tenant} binding needs path, not path_prefix")
        # Each of these was taken literally or cut matching short without a word: a rule that
        # never applies (`path_prefix: /admin/*`: the default allow instead), or one that
        # covers more than written and binds no tenant (`/api/**/tenants/{tenant}`).
        if self.path_prefix is not None and re.search(r"[*{}]", self.path_prefix):
            raise ValueError("path_prefix is a literal prefix (segment-aware); for *, ** or "
                             "{tenant} use path")
        check_path_pattern(target, whole=lambda segment: segment in _PLACEHOLDERS,
                           named="*, ** and {tenant}", rest_last=True,
                           refused="so the rule would never apply")
        if self.methods == []:
            raise ValueError("methods: list at least one (leave methods out for any method)")
        for method in self.methods or ():
            if not is_one_method(method):
                raise ValueError(f"methods: {method!r} is not one HTTP method (leave methods "
                                 "out for any method)")
        return self


class PolicyConfig(Model):
    routes: list[RouteConfig] = Field(default_factory=list)
    default_action: Literal["allow", "deny"] = "allow"  # when no route rule matches

    @field_validator("routes")
    @classmethod
    def _none_shadowed(cls, routes: list[RouteConfig]) -> list[RouteConfig]:
        # The first matching rule applies: a rule whose every request an earlier rule takes
        # never does (a deny for /api/admin after an allow for /api let /api/admin through).
        for i, later in enumerate(routes):
            for j, earlier in enumerate(routes[:i]):
                if _methods_cover(earlier, later) and _path_covers(earlier, later):
                    raise error_at((i,), _shadowed_by(j, earlier, later))
        return routes


def _shadowed_by(j: int, earlier: RouteConfig, later: RouteConfig) -> str:
    # policy: a `{tenant}` rule answers another tenant's path with 404 for the methods it does
    # not list too. When routes[j] takes only some methods (and binds no tenant itself), this
    # rule still applies to the others: deleted as dead, it would let another tenant's path
    # through for them (a DELETE after a GET-only rule).
    if earlier.methods is not None and _binds_tenant(later) and not _binds_tenant(earlier):
        return (f"routes[{j}] comes first and takes every request with a method this rule "
                f"lists (the first matching rule applies): for those, routes[{j}] decides even "
                "another tenant's path (no 404) and this rule's checks never run; for other "
                "methods this rule does answer another tenant's path with 404, so keep it: put "
                f"it before routes[{j}]")
    return (f"never applies: routes[{j}] comes first and matches every method and path this "
            "rule does (the first matching rule applies): put this rule before it")


def _binds_tenant(route: RouteConfig) -> bool:
    return "{tenant}" in _segments(route)


# Only what is provably covered is refused (prefix under prefix, a pattern whose literal
# leading segments lie under a prefix, identical patterns); anything else passes.
def _methods_cover(earlier: RouteConfig, later: RouteConfig) -> bool:
    if earlier.methods is None:
        return True
    if later.methods is None:
        return False
    taken = {m.upper() for m in earlier.methods}
    if "GET" in taken:
        taken.add("HEAD")  # policy: a GET rule governs HEAD too
    return {m.upper() for m in later.methods} <= taken


def _path_covers(earlier: RouteConfig, later: RouteConfig) -> bool:
    prefix = _as_prefix(earlier)
    if prefix is None:
        return _folded_segments(earlier) == _folded_segments(later)
    # Every path `later` matches begins with its literal part, followed by `/` or nothing.
    if later.path_prefix is not None:
        literal = fold(later.path_prefix).rstrip("/")
    else:
        leading = itertools.takewhile(lambda s: s not in _PLACEHOLDERS, _segments(later))
        literal = "".join("/" + fold(segment) for segment in leading)
    return prefix == "" or literal == prefix or literal.startswith(prefix + "/")


def _as_prefix(route: RouteConfig) -> str | None:
    """The folded, segment-aware prefix (no trailing `/`) whose paths, and only those, the
    route matches: a path_prefix, or a pattern of literal segments ending in `**`."""
    if route.path_prefix is not None:
        return fold(route.path_prefix).rstrip("/")
    *leading, last = _segments(route)
    if last != "**" or any(s in _PLACEHOLDERS for s in leading):
        return None
    return "".join("/" + fold(segment) for segment in leading)


_PLACEHOLDERS = ("*", "**", "{tenant}")


def _segments(route: RouteConfig) -> list[str]:
    return (route.path or "").strip("/").split("/")


def _folded_segments(route: RouteConfig) -> tuple[str, ...] | None:
    if route.path is None:
        return None
    return tuple(s if s in _PLACEHOLDERS else fold(s) for s in _segments(route))


class ContextKey(Model):
    id: str
    secret: Secret

    @field_validator("id")
    @classmethod
    def _key_id(cls, value: str) -> str:
        if (problem := key_id_problem(value)) is not None:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _long_enough(self) -> ContextKey:
        if len(self.secret.value) < MIN_KEY_BYTES:
            raise ValueError(f"secret must be at least {MIN_KEY_BYTES} bytes")
        return self


# Headers some frameworks read as "run this method instead" (Express's method-override,
# ASP.NET, several Java stacks): the backend would run another method than the one the route
# rules were checked against. The generated Envoy config strips them before ext_authz, and
# every allow removes them too (for meshes whose proxies do not strip them).
METHOD_OVERRIDE_HEADERS = ("x-http-method-override", "x-http-method", "x-method-override")
# The same for the path: IIS URL Rewrite stacks (and Symfony before 2018) route on these
# instead of the request line, which the route rules and the `{tenant}` segment were read from;
# nginx's auth_request convention (`x-original-uri`) and Traefik's (`x-forwarded-uri`) carry a
# path that apps behind them read as the original request's. Envoy drops a client's
# `x-envoy-original-path` itself (pinned by the e2e tests). WebDAV's `Destination` is left to
# the backend (docs/envoy.md).
PATH_OVERRIDE_HEADERS = ("x-original-url", "x-rewrite-url", "x-original-uri", "x-forwarded-uri")
OVERRIDE_HEADERS = (*METHOD_OVERRIDE_HEADERS, *PATH_OVERRIDE_HEADERS)


# Headers a request cannot do without: the generated Envoy config removes trusted headers
# before ext_authz (Authorization gone: every JWT refused), and an allow overwrites the set ones
# (Host, the body framing). Pseudo-headers (`:authority`, `:path`) are no header names here.
NEEDED_HEADERS = ("authorization", "host", "content-length", "transfer-encoding")
# Hop-by-hop headers may be stripped (Envoy drops most itself; stripping `upgrade` turns off
# WebSocket and h2c upgrades) but not set: a value tenantgate writes there means something else.
REQUEST_HEADERS = (*NEEDED_HEADERS, "connection", "keep-alive", "te", "upgrade",
                   "proxy-connection")


class ContextConfig(Model):
    tenant_header: HeaderName = "x-tenant-id"
    header: HeaderName = "x-tenant-context"
    subject_header: HeaderName = "x-tenant-subject"
    # At least 5 s: a shorter context could expire in transit, or on a backend (or database)
    # whose clock runs a little ahead.
    ttl: Duration = Field(default=60.0, ge=5)
    active_key: str
    keys: list[ContextKey] = Field(min_length=1)
    # Trusted headers tenantgate does not set: removed from every allowed request.
    strip_headers: list[HeaderName] = Field(
        default_factory=lambda: ["x-tenant-plan", "x-tenant-scopes", "x-tenant-roles"])

    @model_validator(mode="after")
    def _active_known(self) -> ContextConfig:
        ids = [k.id for k in self.keys]
        if len(set(ids)) != len(ids):
            raise ValueError("key ids must be unique")
        if self.active_key not in ids:
            raise ValueError(f"active_key {self.active_key!r} is not among keys")
        if clash := set(self.headers_set) & set(self.strip_headers):
            raise ValueError(f"strip_headers must not list a header tenantgate sets: "
                             f"{sorted(clash)}")
        self._headers_usable()
        return self

    def _headers_usable(self) -> None:
        named = [("tenant_header", self.tenant_header), ("header", self.header),
                 ("subject_header", self.subject_header),
                 *((("strip_headers", i), h) for i, h in enumerate(self.strip_headers))]
        for key, name in named:
            loc = key if isinstance(key, tuple) else (key,)
            if name in (NEEDED_HEADERS if isinstance(key, tuple) else REQUEST_HEADERS):
                raise error_at(loc, f"{name} is a header requests need: tenantgate and the "
                                    "generated Envoy config remove or overwrite this one")
        seen: dict[str, str] = {}
        for key, name in named[:3]:
            if name in seen:
                raise error_at((str(key),), f"{name} is also context.{seen[name]}: each header "
                                            "tenantgate sets needs a name of its own")
            seen[name] = str(key)

    @property
    def headers_set(self) -> tuple[str, str, str]:
        """The headers tenantgate sets on every allow (overwriting any client copy)."""
        return self.tenant_header, self.header, self.subject_header

    @property
    def trusted_headers(self) -> tuple[str, ...]:
        """Every header a backend trusts: those tenantgate sets and those it strips."""
        return tuple(dict.fromkeys((*self.headers_set, *self.strip_headers)))

    @property
    def stripped_headers(self) -> tuple[str, ...]:
        """Every header whose client copy must never reach a backend: the trusted ones and the
        method- and path-override headers."""
        return tuple(dict.fromkeys((*self.trusted_headers, *OVERRIDE_HEADERS)))

    @property
    def headers_to_remove(self) -> tuple[str, ...]:
        """What an allow removes: the stripped headers tenantgate does not set itself (Envoy
        applies removals after the headers an allow sets, so a set one would be lost)."""
        return tuple(h for h in self.stripped_headers if h not in self.headers_set)


class CredentialsConfig(Model):
    api_key_header: HeaderName = "x-api-key"
    max_token_bytes: Count = Field(default=8192, ge=256)
    token_cache_entries: Count = Field(default=50_000, ge=0)
    token_cache_bytes: ByteSize = 64 * 1024 * 1024
    rejected_token_cache_entries: Count = Field(default=10_000, ge=0)  # 0 disables it
    rejected_token_cache_ttl: Duration = Field(default=60.0, ge=1, le=3600)


class AuditConfig(Model):
    enabled: Flag = True
    path: str = "-"  # "-" is standard output; a relative path is relative to the config file
    sample_allow: Number = Field(default=0.01, ge=0.0, le=1.0)
    # Denials cost a caller nothing: a flood of them must not fill the disk. 0: no cap.
    max_lines_per_second: Count = Field(default=1000, ge=0)

    @field_validator("path")
    @classmethod
    def _relative_to_config(cls, value: str, info: ValidationInfo) -> str:
        return value if value == "-" else config_file_path(value, info)


# Hosts a listener on every address of its family binds: [::] takes IPv4 too (dual stack).
# An empty host is listen.metrics' 0.0.0.0 (observe/metrics_listener.py), IPv4 only; gRPC
# refuses one outright, so listen.grpc and admin.listen never bind it.
_ANY_HOST = {"": ("4",), "0.0.0.0": ("4",), "::": ("4", "6")}


def _same_listener(a: str, b: str) -> bool:
    """Whether binding `b` fails once `a` is bound: one socket path, or one TCP port on one
    host or on a wildcard address covering the other (port 0 is a fresh port every time)."""
    path_a, path_b = grpc_unix_path(a), grpc_unix_path(b)
    if path_a is not None or path_b is not None:
        return (path_a is not None and path_b is not None
                and os.path.abspath(path_a) == os.path.abspath(path_b))
    host_a, _, port_a = a.rpartition(":")
    host_b, _, port_b = b.rpartition(":")
    if int(port_a) != int(port_b) or int(port_a) == 0:
        return False
    host_a, host_b = host_a.strip("[]").lower(), host_b.strip("[]").lower()
    return host_a == host_b or _covers(host_a, host_b) or _covers(host_b, host_a)


def _covers(wildcard: str, host: str) -> bool:
    families = _ANY_HOST.get(wildcard)
    return families is not None and ("6" if ":" in host else "4") in families


class Config(Model):
    listen: ListenConfig = Field(default_factory=ListenConfig)
    issuers: list[IssuerConfig] = Field(default_factory=list)
    credentials: CredentialsConfig = Field(default_factory=CredentialsConfig)
    tenants: TenantsConfig = Field(default_factory=TenantsConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    context: ContextConfig
    quota: QuotaConfig = Field(default_factory=QuotaConfig)
    audit: AuditConfig = Field(default_factory=AuditConfig)
    api_keys: ApiKeysConfig | None = None  # off unless configured
    admin: AdminConfig | None = None  # the admin API listener; off unless configured

    @field_validator("admin")
    @classmethod
    def _admin_needs_api_keys(cls, value: AdminConfig | None,
                              info: ValidationInfo) -> AdminConfig | None:
        # check-config must refuse what serve refuses: the admin API only manages API keys.
        # Absent from info.data when api_keys itself failed: that error is the one to read.
        if value is not None and "api_keys" in info.data and info.data["api_keys"] is None:
            raise ValueError("the admin API manages API keys: configure api_keys too")
        return value

    @model_validator(mode="after")
    def _listeners_distinct(self) -> Config:
        # Two listeners on one address: check-config passed and serve failed to bind the
        # second (or, for one socket path, called its own first listener "another process").
        listeners = [("listen.grpc", self.listen.grpc), ("listen.metrics", self.listen.metrics),
                     ("listen.uds", f"unix:{self.listen.uds}" if self.listen.uds else None),
                     ("listen.health", self.listen.health),
                     ("admin.listen", self.admin.listen if self.admin else None)]
        taken: list[tuple[str, str]] = []
        for key, address in listeners:
            if address is None:
                continue
            for earlier_key, earlier in taken:
                if _same_listener(earlier, address):
                    raise error_at(tuple(key.split(".")),
                                   f"{address} is also {earlier_key} ({earlier}): each listener "
                                   "needs an address of its own")
            taken.append((key, address))
        return self

    @model_validator(mode="after")
    def _degraded_needs_a_shared_store_and_replicas(self) -> Config:
        # Degraded mode gives each process limit / quota.replicas while the shared store fails.
        # With the quota off nothing is enforced, and the chart checks only with it on: each
        # refuses exactly what the other does (tests/integration/deploy/test_chart_values.py).
        q = self.quota
        if not q.enabled:
            return self
        for at in self._degraded_failure_modes():
            if q.store == "memory":
                # The in-process store always answers: degraded buckets would never decide.
                raise error_at(at, "degraded, but quota.store is memory (the default), which "
                                   "runs in the process and never fails, so degraded mode would "
                                   "never apply: set quota.store: redis, or another failure_mode")
            if q.replicas is None:
                raise error_at(at, "degraded needs quota.replicas (the most tenantgate "
                                   "processes sharing the store; autoscaled: the maximum)")
        return self

    def _degraded_failure_modes(self) -> list[tuple[str, ...]]:
        """The key paths set to failure_mode degraded: the quota's, plans', tenant overrides'."""
        modes: list[tuple[tuple[str, ...], str | None]] = [
            (("quota", "failure_mode"), self.quota.failure_mode)]
        modes += [(("quota", "plans", name, "failure_mode"), plan.failure_mode)
                  for name, plan in self.quota.plans.items()]
        modes += [(("tenants", "registry", tenant_id, "overrides", "failure_mode"),
                   entry.overrides.failure_mode)
                  for tenant_id, entry in self.tenants.registry.items()]
        return [at for at, mode in modes if mode == "degraded"]

    @model_validator(mode="after")
    def _api_key_header_untouched(self) -> Config:
        name = self.credentials.api_key_header
        if name in self.context.stripped_headers:
            why = ("a trusted header (context.*) or an override header, which the generated "
                   "Envoy config removes before ext_authz: no API key would reach tenantgate")
        elif name == "authorization":
            why = "the JWT's header: the API key needs a header of its own"
        elif name in REQUEST_HEADERS:
            why = "a header requests need for themselves: the API key needs one of its own"
        else:
            return self
        raise error_at(("credentials", "api_key_header"), f"{name} is {why}")

    @model_validator(mode="after")
    def _issuer_secrets_not_context_keys(self) -> Config:
        # HS256 both ways: whoever mints tokens with an issuer's hs_secret could then sign a
        # context for any tenant, past the issuer's own `tenants` list and past the database.
        for i, issuer in enumerate(self.issuers):
            if issuer.hs_secret is None:
                continue
            for j, key in enumerate(self.context.keys):
                if hmac.compare_digest(issuer.hs_secret.value, key.secret.value):
                    raise error_at(("issuers", i, "hs_secret"),
                                   f"is also context.keys[{j}].secret ({key.id}): whoever mints "
                                   "this issuer's tokens could sign a tenant context for any "
                                   "tenant; give each its own secret")
        return self

    @model_validator(mode="after")
    def _issuer_tenants_admitted(self) -> Config:
        pattern = compile_linear(self.tenants.pattern)
        for i, issuer in enumerate(self.issuers):
            for j, tenant_id in enumerate(issuer.tenants or ()):
                if why := not_admitted(pattern, tenant_id):
                    raise error_at(("issuers", i, "tenants", j),
                                   f"{tenant_id!r}: {why}, so the issuer could never speak for it")
        return self

    @field_validator("issuers")
    @classmethod
    def _unique_issuers(cls, issuers: list[IssuerConfig]) -> list[IssuerConfig]:
        # A field validator, so the message names `issuers`, not "(top level)".
        # Two entries with one `iss` would silently shadow each other (and their tenants).
        for field_name, what in (("name", "names"), ("issuer", "issuer values (iss)")):
            values = [getattr(i, field_name) for i in issuers]
            if (twice := first_repeated(values)) is not None:
                raise ValueError(f"{what} must be unique: {twice!r} repeats")
        return issuers
