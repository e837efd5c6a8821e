"""Automatic pipelining of quota script calls: one batch per loop iteration, failures to all."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from tenantgate.errors import QuotaStoreUnavailable
from tenantgate.quota.coalesce import Call, Coalescer


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
    coalescer = Coalescer(sender)
    futures = [coalescer.submit([f"k{i}"], [1]) for i in range(5)]
    replies = await asyncio.gather(*futures)
    assert replies == [f"reply-k{i}" for i in range(5)]
    assert [len(b) for b in sender.batches] == [5]


async def test_later_calls_go_in_a_new_batch() -> None:
    sender = RecordingSender()
    coalescer = Coalescer(sender)
    assert await coalescer.submit(["a"], [1]) == "reply-a"
    assert await coalescer.submit(["b"], [1]) == "reply-b"
    assert [len(b) for b in sender.batches] == [1, 1]


async def test_a_failed_batch_fails_every_waiter_with_the_typed_error() -> None:
    coalescer = Coalescer(RecordingSender(fail=QuotaStoreUnavailable("timeout")))
    futures = [coalescer.submit([f"k{i}"], [1]) for i in range(3)]
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert all(isinstance(r, QuotaStoreUnavailable) for r in results)


async def test_a_per_call_error_reaches_only_its_caller() -> None:
    async def send(calls: list[Call]) -> list[Any]:
        return [QuotaStoreUnavailable("WRONGTYPE") if keys == ["bad"] else "ok"
                for keys, _ in calls]

    coalescer = Coalescer(send)
    good, bad = coalescer.submit(["good"], [1]), coalescer.submit(["bad"], [1])
    assert await good == "ok"
    with pytest.raises(QuotaStoreUnavailable):
        await bad


async def test_a_cancelled_waiter_does_not_break_the_batch() -> None:
    sender = RecordingSender()
    coalescer = Coalescer(sender)
    cancelled, kept = coalescer.submit(["a"], [1]), coalescer.submit(["b"], [1])
    cancelled.cancel()
    assert await kept == "reply-b"
