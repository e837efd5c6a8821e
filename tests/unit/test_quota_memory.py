"""The embedded store's bound: which buckets a sweep forgets, and when it sweeps."""

from __future__ import annotations

from tenantgate.quota.memory import MemoryStore
from tenantgate.quota.store import Bucket

NOW = 10**12  # µs; every call passes its own clock, so nothing here depends on real time


def daily(key: str, limit: int = 10) -> Bucket:
    return Bucket(f"rl:{{t:{key}}}:edge:86400", "edge-day", limit, 86400.0, limit)


def test_churn_through_other_keys_does_not_reset_an_exhausted_bucket() -> None:
    # A bucket that keeps denying is never charged again: forgetting the least recently
    # charged first reset it to full once enough other keys went by (10 more a day here).
    store = MemoryStore(max_entries=100)
    victim = daily("victim")
    assert [store.acquire_now([victim], 1, NOW).admitted for _ in range(11)] == [True] * 10 + [
        False]
    during = 0
    for i in range(1100):
        store.acquire_now([daily(f"k{i}")], 1, NOW + i)
        during += store.acquire_now([victim], 1, NOW + i).admitted
    assert during == 0
    assert len(store) <= 125


def test_a_sweep_forgets_the_buckets_closest_to_full() -> None:
    store = MemoryStore(max_entries=100)
    deep = [daily(f"deep{i}") for i in range(100)]
    for bucket in deep:
        store.acquire_now([bucket], 5, NOW)  # half a day to full again
    shallow = [daily(f"shallow{i}") for i in range(25)]
    for bucket in shallow:
        store.acquire_now([bucket], 1, NOW)  # 2.4 h to full again: forgotten first
    assert len(store) == 100
    assert all(bucket.key in store._tats for bucket in deep)


def test_a_bucket_full_again_is_dropped_before_any_live_one() -> None:
    store = MemoryStore(max_entries=100)
    second = Bucket("tg:{t:a}:plan:1", "p-1s", 1, 1.0, 1)
    for i in range(100):
        store.acquire_now([Bucket(f"tg:{{t:s{i}}}:plan:1", "p-1s", 1, 1.0, 1)], 1, NOW)
    store.acquire_now([second], 1, NOW + 2_000_000)  # 2 s later: the 100 above are full again
    for i in range(24):
        store.acquire_now([daily(f"d{i}")], 1, NOW + 2_000_000)
    assert len(store) == 25
    assert second.key in store._tats


def test_a_small_bound_holds_at_most_a_quarter_more() -> None:
    # The first sweep came at 1,024 entries whatever the bound: 100 held 1,023.
    store = MemoryStore(max_entries=100)
    for i in range(1023):
        store.acquire_now([daily(f"k{i}")], 1, NOW)
    assert len(store) <= 125
