"""Automatic pipelining: script calls made in the same event-loop iteration go to Redis as one
pipeline (one write, one read), instead of one round trip each.

Each call is still its own EVALSHA, atomic on its own: coalescing changes how many system
calls and parser passes a burst of Checks costs, not what any one of them decides.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

Call = tuple[list[str], list[int]]  # keys, args
Pending = tuple[Call, "asyncio.Future[Any]"]
Dispatch = Callable[[list[Pending]], None]  # must settle every future, now or later
SendBatch = Callable[[list[Call]], Awaitable[list[Any]]]


class Coalescer:
    def __init__(self, dispatch: Dispatch, idle: Callable[[], bool] | None = None) -> None:
        self._dispatch = dispatch
        self._idle = idle  # true when nothing is in flight that a call could share a write with
        self._pending: list[Pending] = []

    def submit(self, keys: list[str], args: list[int]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        first = not self._pending
        self._pending.append(((keys, args), future))
        if first:
            if self._idle is not None and self._idle():
                # Nothing in flight: batching would only cost one more event-loop turn of
                # latency (the measured case at low load); send now. Under load a round is
                # usually in flight and calls gather for the next write.
                self._flush()
            else:
                loop.call_soon(self._flush)  # after every Check already runnable has submitted
        return future

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        try:
            self._dispatch(batch)
        except Exception as exc:  # a bug, not a store failure: no waiter may hang on it
            fail(batch, exc)


def settle(future: asyncio.Future[Any], reply: Any) -> None:
    """An exception reply is that caller's own failure; a cancelled waiter is skipped."""
    if future.done():
        return
    if isinstance(reply, BaseException):
        future.set_exception(reply)
    else:
        future.set_result(reply)


def fail(batch: list[Pending], exc: BaseException) -> None:
    for _, future in batch:
        settle(future, exc)


def in_tasks(send: SendBatch) -> Dispatch:
    """A dispatch for a sender that must await (redis-py's paths): one Task per batch."""
    tasks: set[asyncio.Task[None]] = set()

    async def deliver(batch: list[Pending]) -> None:
        try:
            replies = await send([call for call, _ in batch])
        except BaseException as exc:  # every waiter learns of the failure, typed by the sender
            fail(batch, exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), reply in zip(batch, replies, strict=True):
            settle(future, reply)

    def dispatch(batch: list[Pending]) -> None:
        task = asyncio.get_running_loop().create_task(deliver(batch))
        tasks.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(tasks.discard)

    return dispatch
