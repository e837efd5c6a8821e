"""Automatic pipelining of quota script calls: one batch per loop iteration, failures to all."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from tenantgate.errors import QuotaStoreUnavailable
from tenantgate.quota.coalesce import Call, Coalescer, Pending, in_tasks, settle


class RecordingSender:
    def __init__(self, fail: Exception | None = None) -> None:
        self.batches: list[list[Call]] = []
        self.fail = fail

    async def __call__(self, calls: list[Call]) -> list[Any]:
        self.batches.append(calls)
        await asyncio.sleep(0)
        if self.fail is not None:
            raise self.fail
        return [f"reply-{keys[0]}" for keys, _ in calls]


async def test_calls_submitted_in_one_iteration_share_one_batch() -> None:
    sender = RecordingSender()
    coalescer = Coalescer(in_tasks(sender))
    futures = [coalescer.submit([f"k{i}"], [1]) for i in range(5)]
    replies = await asyncio.gather(*futures)
    assert replies == [f"reply-k{i}" for i in range(5)]
    assert [len(b) for b in sender.batches] == [5]


async def test_later_calls_go_in_a_new_batch() -> None:
    sender = RecordingSender()
    coalescer = Coalescer(in_tasks(sender))
    assert await coalescer.submit(["a"], [1]) == "reply-a"
    assert await coalescer.submit(["b"], [1]) == "reply-b"
    assert [len(b) for b in sender.batches] == [1, 1]


async def test_a_failed_batch_fails_every_waiter_with_the_typed_error() -> None:
    coalescer = Coalescer(in_tasks(RecordingSender(fail=QuotaStoreUnavailable("timeout"))))
    futures = [coalescer.submit([f"k{i}"], [1]) for i in range(3)]
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert all(isinstance(r, QuotaStoreUnavailable) for r in results)


async def test_a_per_call_error_reaches_only_its_caller() -> None:
    async def send(calls: list[Call]) -> list[Any]:
        return [QuotaStoreUnavailable("WRONGTYPE") if keys == ["bad"] else "ok"
                for keys, _ in calls]

    coalescer = Coalescer(in_tasks(send))
    good, bad = coalescer.submit(["good"], [1]), coalescer.submit(["bad"], [1])
    assert await good == "ok"
    with pytest.raises(QuotaStoreUnavailable):
        await bad


async def test_a_cancelled_waiter_does_not_break_the_batch() -> None:
    sender = RecordingSender()
    coalescer = Coalescer(in_tasks(sender))
    cancelled, kept = coalescer.submit(["a"], [1]), coalescer.submit(["b"], [1])
    cancelled.cancel()
    assert await kept == "reply-b"


async def test_a_dispatch_that_raises_fails_every_waiter_instead_of_leaving_it_hanging() -> None:
    def broken(batch: list[Pending]) -> None:
        raise ValueError("bug")

    coalescer = Coalescer(broken)
    futures = [coalescer.submit([f"k{i}"], [1]) for i in range(3)]
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert [type(r) for r in results] == [ValueError] * 3


async def test_a_direct_dispatch_settles_futures_itself_without_a_task() -> None:
    batches: list[list[Pending]] = []
    coalescer = Coalescer(batches.append)
    futures = [coalescer.submit([f"k{i}"], [1]) for i in range(3)]
    await asyncio.sleep(0)
    assert [[call for call, _ in b] for b in batches] == [[([f"k{i}"], [1]) for i in range(3)]]
    settle(batches[0][0][1], "one")
    settle(batches[0][1][1], QuotaStoreUnavailable("ResponseError"))
    futures[2].cancel()
    settle(batches[0][2][1], "ignored: the waiter is gone")
    assert await futures[0] == "one"
    with pytest.raises(QuotaStoreUnavailable):
        await futures[1]


async def test_an_idle_store_gets_the_first_call_at_once_and_later_ones_batched() -> None:
    dispatched: list[list[Pending]] = []
    in_flight = False

    def dispatch(batch: list[Pending]) -> None:
        nonlocal in_flight
        dispatched.append(batch)
        in_flight = True  # like the pipe: a round is outstanding until its replies settle

    coalescer = Coalescer(dispatch, idle=lambda: not in_flight)
    first = coalescer.submit(["a"], [1])
    assert [len(b) for b in dispatched] == [1]  # written before any loop turn
    later = [coalescer.submit([k], [1]) for k in ("b", "c")]
    assert [len(b) for b in dispatched] == [1]  # a round is in flight: these wait for the turn
    await asyncio.sleep(0)
    assert [len(b) for b in dispatched] == [1, 2]
    for batch in dispatched:
        for _, future in batch:
            settle(future, "ok")
    assert await first == "ok" and await asyncio.gather(*later) == ["ok", "ok"]
