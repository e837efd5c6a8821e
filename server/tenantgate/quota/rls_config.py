"""envoyproxy/ratelimit-format config files (domain, nested descriptors, rate_limit) as a tree."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tenantgate.config.load import StrictLoader, yaml_problem
from tenantgate.errors import ConfigError

# As envoyproxy/ratelimit counts them: a month is 30 days, a year 365.
UNIT_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 604800,
                "month": 30 * 86400, "year": 365 * 86400}
_NODE_KEYS = {"key", "value", "rate_limit", "descriptors", "shadow_mode", "detailed_metric"}
_RATE_KEYS = {"unit", "requests_per_unit", "unlimited", "name"}
# RateLimit.requests_per_unit and DescriptorStatus.limit_remaining are uint32 on the wire.
_MAX_REQUESTS_PER_UNIT = 2**32 - 1


class _Loader(StrictLoader):
    """StrictLoader that reads a descriptor's `value` and a limit's `name` as written, as
    envoyproxy/ratelimit (Go yaml into a string) does: Envoy sends values as text, so
    `value: true` must match "true" and `value: 1.10` "1.10", not "True" and "1.1"."""


_MAPPING = yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG
_AS_WRITTEN = ("value", "name")
# A list or mapping became its Python repr, which no request sends; Go's yaml refuses it too.
_NOT_TEXT = "must be a string, not a list or mapping"


def _mapping_as_written(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    mapping: dict[Any, Any] = StrictLoader.yaml_constructors[_MAPPING](loader, node)
    for key_node, value_node in node.value:
        if (key_node.value in _AS_WRITTEN and isinstance(value_node, yaml.ScalarNode)
                and value_node.tag != "tag:yaml.org,2002:null"):
            mapping[key_node.value] = value_node.value
    return mapping


_Loader.add_constructor(_MAPPING, _mapping_as_written)


@dataclass(frozen=True, slots=True)
class RlsLimit:
    unit: str  # lower-case, a key of UNIT_SECONDS
    requests_per_unit: int
    name: str = ""


@dataclass(slots=True)
class Node:
    limit: RlsLimit | None = None
    unlimited: bool = False
    shadow: bool = False
    exact: dict[tuple[str, str], Node] = field(default_factory=dict)  # key + value
    prefix: list[tuple[str, str, Node]] = field(default_factory=list)  # key + value ending in *
    any_value: dict[str, Node] = field(default_factory=dict)  # key without value

    def child(self, key: str, value: str) -> Node | None:
        """Like envoyproxy/ratelimit: an exact value first, then a `prefix*`, then any value."""
        if (found := self.exact.get((key, value))) is not None:
            return found
        for k, start, node in self.prefix:
            if k == key and value.startswith(start):
                return node
        return self.any_value.get(key)


def load_domains(paths: list[str]) -> dict[str, Node]:
    domains: dict[str, Node] = {}
    issues: list[str] = []
    for path in paths:
        data = _read(path)
        where = f"{path}"
        if not isinstance(data, dict) or not isinstance(data.get("domain"), str):
            issues.append(f"{where}: domain: required, a string")
            continue
        if not data["domain"]:  # Envoy's filter refuses it; envoy-config left the filter out
            issues.append(f"{where}: domain: must not be empty")
            continue
        if unknown := set(data) - {"domain", "descriptors"}:
            issues.append(f"{where}: {sorted(unknown)[0]}: unknown key")
        domain = data["domain"]
        if domain in domains:
            issues.append(f"{where}: domain {domain!r} is defined twice")
            continue
        root = Node()
        # Recursive, but a level here is several in the YAML parser, which stops first.
        _fill(root, data.get("descriptors") or [], f"{where}: descriptors", issues)
        domains[domain] = root
    if issues:
        raise ConfigError(issues)
    return domains


def _read(path: str) -> Any:
    try:
        # Strict like the main config: a duplicate key is an error, not "the last one wins".
        return yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_Loader)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: {yaml_problem(exc)}"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read rate-limit config: {exc}"]) from None
    except RecursionError:  # the YAML composer and constructor recurse per nesting level
        raise ConfigError([f"{path}: nested too deeply"]) from None


def _fill(parent: Node, items: Any, where: str, issues: list[str]) -> None:
    if not isinstance(items, list):
        issues.append(f"{where}: must be a list")
        return
    for i, item in enumerate(items):
        at = f"{where}[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("key"), str):
            issues.append(f"{at}.key: required, a string")
            continue
        if unknown := set(item) - _NODE_KEYS:
            name = sorted(unknown)[0]
            issues.append(f"{at}.{name}: not supported by tenantgate" if name == "replaces"
                          else f"{at}.{name}: unknown key")
        node = Node(shadow=_flag(item, "shadow_mode", at, issues) is True)
        _flag(item, "detailed_metric", at, issues)
        if "rate_limit" in item:
            _rate(node, item["rate_limit"], f"{at}.rate_limit", issues)
        key, value = item["key"], item.get("value")
        if value is not None and not isinstance(value, str):
            issues.append(f"{at}.value: {_NOT_TEXT}")
            continue
        if value == "":  # envoyproxy/ratelimit: an empty value is no value (any value)
            value = None
        if _taken(parent, key, value):
            # One would silently replace (or shadow) the other, losing its limit; as
            # envoyproxy/ratelimit, refuse the file.
            shown = key if value is None else f"{key}={value}"
            issues.append(f"{at}: duplicate descriptor {shown}")
        elif value is None:
            parent.any_value[key] = node
        elif value.endswith("*"):
            parent.prefix.append((key, value[:-1], node))
        else:
            parent.exact[(key, value)] = node
        _fill(node, item.get("descriptors") or [], f"{at}.descriptors", issues)


def _taken(parent: Node, key: str, value: str | None) -> bool:
    if value is None:
        return key in parent.any_value
    if value.endswith("*"):
        return any(k == key and start == value[:-1] for k, start, _ in parent.prefix)
    return (key, value) in parent.exact


def _rate(node: Node, rate: Any, at: str, issues: list[str]) -> None:
    if not isinstance(rate, dict):
        issues.append(f"{at}: must be a mapping")
        return
    if unknown := set(rate) - _RATE_KEYS:
        issues.append(f"{at}.{sorted(unknown)[0]}: unknown key")
    unlimited = _flag(rate, "unlimited", at, issues)
    if unlimited is None:  # reported; its unit and count would only add noise
        return
    if unlimited:
        node.unlimited = True
        return
    unit = str(rate.get("unit", "")).lower()
    count = rate.get("requests_per_unit")
    name = rate.get("name")
    if name is not None and not isinstance(name, str):
        issues.append(f"{at}.name: {_NOT_TEXT}")
    elif unit not in UNIT_SECONDS:
        issues.append(f"{at}.unit: must be one of {', '.join(UNIT_SECONDS)}")
    elif (not isinstance(count, int) or isinstance(count, bool)
          or not 0 <= count <= _MAX_REQUESTS_PER_UNIT):
        issues.append(f"{at}.requests_per_unit: must be a whole number "
                      f"from 0 to {_MAX_REQUESTS_PER_UNIT}")
    else:
        node.limit = RlsLimit(unit, count, name or "")  # null: no name, as Go reads it


def _flag(mapping: dict[str, Any], key: str, at: str, issues: list[str]) -> bool | None:
    """A real YAML boolean, default false; None (and an issue) for anything else: bool("false")
    is True, so accepting a quoted value would flip its meaning."""
    value = mapping.get(key, False)
    if isinstance(value, bool):
        return value
    issues.append(f"{at}.{key}: must be true or false, not {value!r}")
    return None
