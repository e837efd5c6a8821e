"""A small PromQL evaluator: does an alert rule's expression return anything in a scenario?

It knows the operators the down alerts use (selectors, comparisons with a number, and/or/unless
with on/ignoring, aggregations by labels, absent, max_over_time) and raises on anything else.
Time has two points: a series is `live` (scraped now) or only in the past (exported within any
range a rule reads, stale now, as a target's series are once it stops answering).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import promql_parser

Labels = frozenset[tuple[str, str]]
Vector = dict[Labels, float]


@dataclass(frozen=True)
class Series:
    name: str
    labels: dict[str, str]
    value: float
    live: bool = True


COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    "==": operator.eq, "!=": operator.ne, ">": operator.gt, "<": operator.lt,
    ">=": operator.ge, "<=": operator.le}
AGGREGATIONS: dict[str, Callable[[list[float]], float]] = {
    "group": lambda values: 1.0, "sum": sum, "max": max, "min": min,
    "count": lambda values: float(len(values))}


def evaluate(expr: str, series: Iterable[Series]) -> Vector:
    """The instant vector `expr` returns now (labels without __name__)."""
    result = _eval(promql_parser.parse(expr), list(series))
    assert isinstance(result, dict), f"{expr} is a scalar"
    return result


def _eval(node: Any, series: list[Series]) -> Vector | float:
    if isinstance(node, promql_parser.ParenExpr):
        return _eval(node.expr, series)
    if isinstance(node, promql_parser.NumberLiteral):
        return float(node.val)
    if isinstance(node, promql_parser.VectorSelector):
        return _select(node, series, live_only=True)
    if isinstance(node, promql_parser.Call):
        return _call(node, series)
    if isinstance(node, promql_parser.AggregateExpr):
        return _aggregate(node, series)
    if isinstance(node, promql_parser.BinaryExpr):
        return _binary(node, series)
    raise NotImplementedError(f"{type(node).__name__}: {node}")


def _matches(matcher: Any, value: str) -> bool:
    op = matcher.op
    if op == promql_parser.MatchOp.Equal:
        return value == matcher.value
    if op == promql_parser.MatchOp.NotEqual:
        return value != matcher.value
    full = re.fullmatch(matcher.value, value) is not None
    return full if op == promql_parser.MatchOp.Re else not full


def _select(selector: Any, series: list[Series], *, live_only: bool) -> Vector:
    return {frozenset(s.labels.items()): s.value for s in series
            if s.name == selector.name and (s.live or not live_only)
            and all(_matches(m, s.labels.get(m.name, "")) for m in selector.matchers.matchers)}


def _call(call: Any, series: list[Series]) -> Vector:
    name, (arg,) = call.func.name, call.args
    if name == "max_over_time":
        assert isinstance(arg, promql_parser.MatrixSelector)
        # Every series here exported within the range: past ones count, live ones too.
        return _select(arg.vector_selector, series, live_only=False)
    if name == "absent":
        found = _eval(arg, series)
        if found:
            return {}
        labels: Labels = frozenset()
        if isinstance(arg, promql_parser.VectorSelector):  # Prometheus keeps its `=` labels
            labels = frozenset((m.name, m.value) for m in arg.matchers.matchers
                               if m.op == promql_parser.MatchOp.Equal)
        return {labels: 1.0}
    raise NotImplementedError(name)


def _aggregate(node: Any, series: list[Series]) -> Vector:
    assert node.modifier is None or node.modifier.type == promql_parser.AggModifierType.By
    by = set(node.modifier.labels) if node.modifier else set()
    groups: dict[Labels, list[float]] = {}
    inner = _eval(node.expr, series)
    assert isinstance(inner, dict)
    for labels, value in inner.items():
        groups.setdefault(frozenset((k, v) for k, v in labels if k in by), []).append(value)
    return {labels: AGGREGATIONS[str(node.op)](values) for labels, values in groups.items()}


def _signature(labels: Labels, modifier: Any) -> Labels:
    matching = modifier.matching if modifier is not None else None
    if matching is None:
        return labels
    names = set(matching.labels)
    if matching.type == promql_parser.LabelModifierType.Include:  # on (...)
        return frozenset((k, v) for k, v in labels if k in names)
    return frozenset((k, v) for k, v in labels if k not in names)  # ignoring (...)


def _binary(node: Any, series: list[Series]) -> Vector:
    op, lhs, rhs = str(node.op), _eval(node.lhs, series), _eval(node.rhs, series)
    if op in COMPARISONS:
        assert isinstance(lhs, dict) and isinstance(rhs, float), "only vector op number"
        assert node.modifier is None or not node.modifier.return_bool
        return {labels: v for labels, v in lhs.items() if COMPARISONS[op](v, rhs)}
    assert isinstance(lhs, dict) and isinstance(rhs, dict), f"{op} needs two vectors"
    right = {_signature(labels, node.modifier) for labels in rhs}
    if op == "and":
        return {k: v for k, v in lhs.items() if _signature(k, node.modifier) in right}
    if op == "unless":
        return {k: v for k, v in lhs.items() if _signature(k, node.modifier) not in right}
    if op == "or":
        left = {_signature(labels, node.modifier) for labels in lhs}
        return {**lhs, **{k: v for k, v in rhs.items()
                          if _signature(k, node.modifier) not in left}}
    raise NotImplementedError(op)
