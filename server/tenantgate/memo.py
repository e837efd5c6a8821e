"""Bounded memos of pure functions: emptied when full, refilled by the lookups that follow."""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")
# Memos keyed by a request path keep only paths up to this long: the caller picks the path, and
# long unique ones would each hold this much (the route memo and the limiter's bucket memo).
MAX_MEMO_PATH_CHARS = 512


def remember(memo: dict[K, V], key: K, value: V, max_entries: int) -> V:
    """Store `value` under `key`, emptying a full memo first; returns `value`.

    Emptied, not evicted one by one: a memo holds what a few callers repeat, which the next
    Checks put back at the price of one recomputation each, while LRU order would be paid on
    every hit. The bound is what matters: keys can come from callers.
    """
    if len(memo) >= max_entries:
        memo.clear()
    memo[key] = value
    return value
