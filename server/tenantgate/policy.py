"""Route rules: methods and paths to required scopes/roles, size and content-type limits, and
the binding of a `{tenant}` path segment to the caller's own tenant."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from tenantgate.config.model import PolicyConfig, RouteConfig
from tenantgate.config.paths import (
    NOT_NORMALIZED,
    PATH_ESCAPABLE,
    fold,
    fold_request_path,
    is_placeholder,
)
from tenantgate.decision import Deny, Reason
from tenantgate.memo import MAX_MEMO_PATH_CHARS, remember
from tenantgate.observe import metrics

if TYPE_CHECKING:
    from tenantgate.pipeline import CheckState

TENANT_SEGMENT = "{tenant}"
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    rule: RouteConfig
    index: int
    methods: frozenset[str] | None
    prefix: str | None
    segments: tuple[str, ...] | None  # pattern segments for `path` rules
    content_types: frozenset[str] | None  # the rule's allowed media types, lower-cased
    # `segments` up to the last `{tenant}`, then `**`: the paths that name a tenant the way
    # this rule does, whatever follows. Another tenant's is 404 even where the rule itself
    # does not match (another method, a deeper or shallower path).
    tenant_namespace: tuple[str, ...] | None

    def match(self, method: str, path: str, parts: list[str],
              folded: list[str], tenant_id: str) -> str | Literal[False] | None:
        """False when the route does not apply; else the bound tenant segment (or None).

        `path` and `folded` are lower-cased, `parts` as sent: literals match whatever the
        case (a case-insensitive backend must not be reachable around a rule by changing
        case), while a `{tenant}` segment binds exactly what was sent."""
        # HEAD is a GET without the body (RFC 9110 9.3.2): a GET rule governs it too.
        if self.methods is not None and method not in self.methods and not (
                method == "HEAD" and "GET" in self.methods):
            return self._other_tenant(parts, folded, tenant_id)
        if self.prefix is not None:
            p = self.prefix  # no trailing slash: "" for `/`
            return None if path == p or path.startswith(p + "/") else False
        assert self.segments is not None
        bound = _match_segments(self.segments, parts, folded)
        return self._other_tenant(parts, folded, tenant_id) if bound is False else bound

    def _other_tenant(self, parts: list[str], folded: list[str], tenant_id: str
                      ) -> str | Literal[False]:
        """The tenant segment when the path is in another tenant's namespace, else False.
        Another tenant's path is 404 whatever the method or what follows the tenant: a rule
        for `/tenants/{tenant}/notes` must not leave `/tenants/victim/notes/1`, or a method it
        does not list, to a later rule or the default allow."""
        if self.tenant_namespace is None:
            return False
        bound = _match_segments(self.tenant_namespace, parts, folded)
        return bound if isinstance(bound, str) and bound != tenant_id else False


def _match_segments(pattern: tuple[str, ...], parts: list[str],
                    folded: list[str]) -> str | Literal[False] | None:
    bound: str | None = None
    for i, want in enumerate(pattern):
        if want == "**":
            return bound
        if i >= len(parts):
            return False
        if want == TENANT_SEGMENT:
            if bound is None:
                bound = parts[i]
            elif parts[i] != bound:
                # Every `{tenant}` must be the caller's, not only the last one compared.
                bound = ""  # two different tenants: equals no tenant id (never empty)
        elif want != "*" and want != folded[i]:
            return False
    return bound if len(parts) == len(pattern) else False


@dataclass(frozen=True, slots=True)
class RouteTable:
    routes: tuple[CompiledRoute, ...]
    # Escapes of the characters some rule spells out (`%3A` when a rule has `:`). Envoy leaves
    # them as sent, so a rule for `/jobs:cancel` would not see `/jobs%3Acancel`, which a
    # backend that decodes paths serves as `/jobs:cancel`: such a path is refused instead.
    ambiguous_escapes: re.Pattern[str] | None


def compile_routes(config: PolicyConfig, endpoint_paths: Iterable[str] = ()) -> RouteTable:
    """`endpoint_paths`: the quota's endpoint patterns, which must not be dodged either."""
    routes = _compiled(config)
    patterns = [r.rule.path_prefix or r.rule.path or "" for r in routes] + list(endpoint_paths)
    spelled = {char for pattern in patterns for seg in pattern.split("/")
               if not is_placeholder(seg) for char in seg if char in PATH_ESCAPABLE}
    escapes = "|".join(f"%{ord(char):02x}" for char in sorted(spelled))
    return RouteTable(tuple(routes),
                      re.compile(escapes, re.IGNORECASE) if escapes else None)


def _compiled(config: PolicyConfig) -> list[CompiledRoute]:
    return [CompiledRoute(
        rule=r, index=i,
        methods=frozenset(m.upper() for m in r.methods) if r.methods else None,
        # Segment-aware: `/admin/` means the segment `admin` and all below it, so `/admin`
        # itself too (as a string prefix it slipped past a deny rule written that way).
        prefix=fold(r.path_prefix).rstrip("/") if r.path_prefix is not None else None,
        segments=(tuple(seg if seg == TENANT_SEGMENT else fold(seg)
                        for seg in r.path.strip("/").split("/"))
                  if r.path is not None else None),
        content_types=(frozenset(c.lower() for c in r.content_types)
                       if r.content_types is not None else None),
        tenant_namespace=_tenant_namespace(r.path))
        for i, r in enumerate(config.routes)]


def _tenant_namespace(path: str | None) -> tuple[str, ...] | None:
    if path is None or TENANT_SEGMENT not in (segments := path.strip("/").split("/")):
        return None
    last = len(segments) - 1 - segments[::-1].index(TENANT_SEGMENT)
    return (*(s if s == TENANT_SEGMENT else fold(s) for s in segments[:last + 1]), "**")


def is_normalized(path: str) -> bool:
    """Envoy normalizes paths before Check (see docs/envoy.md); anything left is refused."""
    return path.startswith("/") and NOT_NORMALIZED.search(path) is None


# (route or None, bound tenant segment or None); None alone: the path is not normalized.
RouteMatch = tuple[CompiledRoute | None, str | None] | None
# Which route a (method, path, tenant) takes is a pure function of the route rules, which a
# reload replaces together with the Runtime holding these memos. Bounded in entries, and only
# short paths are kept (memo.MAX_MEMO_PATH_CHARS), so an attacker's long unique paths cannot
# grow memory.
MAX_ROUTE_MEMOS = 10_000


def find_route(table: RouteTable, memo: dict[tuple[str, str, str], RouteMatch],
               method: str, path: str, tenant_id: str) -> RouteMatch:
    key = (method, path, tenant_id)
    if key in memo:
        return memo[key]
    found = _first_route(table, method, path, tenant_id)
    if len(path) <= MAX_MEMO_PATH_CHARS:
        remember(memo, key, found, MAX_ROUTE_MEMOS)
    return found


def _first_route(table: RouteTable, method: str, path: str, tenant_id: str) -> RouteMatch:
    if not is_normalized(path) or (
            table.ambiguous_escapes is not None and table.ambiguous_escapes.search(path)):
        return None
    parts = path.strip("/").split("/")
    folded_path = fold_request_path(path)
    if folded_path is None:
        return None
    folded = folded_path.strip("/").split("/")
    if len(folded) != len(parts):
        # Literals are compared in `folded`, a `{tenant}` binds from `parts`: they must be
        # the same segments (fold_request_path already refuses what would split one).
        return None
    for route in table.routes:
        bound = route.match(method, folded_path, parts, folded, tenant_id)
        if bound is not False:
            return route, bound
    return None, None


def policy_stage(s: CheckState) -> Deny | None:
    assert s.tenant is not None and s.identity is not None
    found = find_route(s.runtime.routes, s.runtime.route_memo, s.request.method,
                       s.request.path, s.tenant.id)
    if found is None:
        return Deny(Reason.MALFORMED_REQUEST)
    route, bound = found
    if route is None:
        if s.runtime.config.policy.default_action == "deny":
            return Deny(Reason.ROUTE_DENIED)
        return None
    s.route = route
    if bound is not None and bound != s.tenant.id:
        # 404, not 403: another tenant's resources must not even look like they exist.
        metrics.CROSS_TENANT.labels(s.tenant.label).inc()
        return Deny(Reason.CROSS_TENANT_PATH)
    return _rule_problem(route, s)


def _rule_problem(route: CompiledRoute, s: CheckState) -> Deny | None:
    assert s.identity is not None
    rule = route.rule
    if rule.action == "deny":
        return Deny(Reason.ROUTE_DENIED)
    if rule.scopes and not s.identity.scopes.issuperset(rule.scopes):
        return Deny(Reason.SCOPE_MISSING)
    if rule.roles and s.identity.roles.isdisjoint(rule.roles):
        return Deny(Reason.ROLE_MISSING)
    length = s.request.content_length
    if rule.max_body_bytes is not None:
        if length is None and s.request.method in _BODY_METHODS:
            # A chunked body of unknown size could be any size: fail closed, ask for a length.
            return Deny(Reason.LENGTH_REQUIRED)
        if length is not None and length > rule.max_body_bytes:
            return Deny(Reason.BODY_TOO_LARGE)
    content_type = s.request.headers.get("content-type")
    # A body of unknown length (chunked, or HTTP/2 without content-length) may be there too.
    may_have_body = length is None and s.request.method in _BODY_METHODS
    if route.content_types is not None and (length or content_type or may_have_body):
        media_type = (content_type or "").split(";", 1)[0].strip().lower()
        if media_type not in route.content_types:
            return Deny(Reason.CONTENT_TYPE_NOT_ALLOWED)
    return None
