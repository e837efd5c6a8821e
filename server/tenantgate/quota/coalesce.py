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
SendBatch = Callable[[list[Call]], Awaitable[list[Any]]]


class Coalescer:
    def __init__(self, send: SendBatch) -> None:
        self._send = send
        self._pending: list[tuple[Call, asyncio.Future[Any]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, keys: list[str], args: list[int]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)  # after every Check already runnable has submitted
        self._pending.append(((keys, args), future))
        return future

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        task = asyncio.get_running_loop().create_task(self._deliver(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, batch: list[tuple[Call, asyncio.Future[Any]]]) -> None:
        try:
            replies = await self._send([call for call, _ in batch])
        except BaseException as exc:  # every waiter learns of the failure, typed by the sender
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), reply in zip(batch, replies, strict=True):
            if not future.done():  # a waiter may have been cancelled meanwhile
                if isinstance(reply, Exception):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)
