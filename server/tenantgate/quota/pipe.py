"""The quota hot path's own Redis connection: pre-encoded commands written straight to the
socket, replies parsed by hiredis as they arrive and handed back in order.

Through redis-py's asyncio connection each batch cost a Task, the timeout and semaphore, a
pool checkout, a drain await and a StreamReader pass per reply: about 100 µs of server CPU per
exact Check more than this (bench/check_bench.py --suite quota), where Checks seldom share a
batch. Here a write never awaits and `data_received` settles each round itself. Only plain
Redis (redis://, rediss://, unix://) comes here; Sentinel and Cluster stay on redis-py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections import deque
from collections.abc import Callable
from typing import Any, cast

import hiredis
from redis.asyncio.connection import AbstractConnection, Connection, SSLConnection
from redis.asyncio.connection import UnixDomainSocketConnection as UnixConnection

from tenantgate.observe.throttle import Throttle
from tenantgate.quota import resp

log = logging.getLogger("tenantgate.quota")
Result = list[Any] | Exception  # the replies in order (error replies as hiredis.ReplyError)
Done = Callable[[Result], None]


class HandshakeRefused(ConnectionError):
    """Redis answered AUTH, SETNAME or SELECT with an error (wrong password, unknown user...)."""


class Round:
    """Commands written together; `done` gets all their replies, or the error that lost them."""

    __slots__ = ("connection", "count", "done", "replies", "timer")

    def __init__(self, count: int, done: Done) -> None:
        self.count = count
        self.replies: list[Any] = []
        self.done: Done | None = done
        self.timer: asyncio.TimerHandle | None = None
        self.connection: _Connection | None = None  # None while waiting for a connection

    def finish(self, result: Result) -> None:
        done, self.done = self.done, None
        if done is not None:  # exactly once: the last reply and the timer may both come
            if self.timer is not None:
                self.timer.cancel()
            done(result)


class _Connection(asyncio.Protocol):
    """One socket. Redis answers in order, so replies fill the rounds in the order written."""

    def __init__(self, stop_using: Callable[[_Connection], None]) -> None:
        self._stop_using = stop_using  # told once this takes no new rounds: retired or closed
        self._reader = hiredis.Reader()
        self._rounds: deque[Round] = deque()
        self._transport: asyncio.Transport | None = None
        self._held: list[bytes] | None = None  # while the transport's buffer is over its mark
        self._retired = False  # takes no new rounds; closes once those in flight are answered
        self.closed = False

    @property
    def idle(self) -> bool:
        return not self._rounds and self._held is None and not self.closed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def write(self, data: bytes, round_: Round) -> None:
        round_.connection = self
        self._rounds.append(round_)
        if self._held is None:
            assert self._transport is not None
            self._transport.write(data)
        else:
            self._held.append(data)

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        while not self.closed:  # a callback below may have dropped the connection
            try:
                reply = reader.gets()
            except hiredis.ProtocolError:  # garbage on the wire: replies can't be matched now
                self.abort(ConnectionError("Redis protocol error"))
                return
            if reply is False:  # no whole reply buffered yet
                return
            if not self._rounds:  # a reply nobody asked for: out of step for good
                self.abort(ConnectionError("Redis reply out of step"))
                return
            head = self._rounds[0]
            head.replies.append(reply)
            if len(head.replies) == head.count:
                self._rounds.popleft()
                head.finish(head.replies)
                if self._retired and not self._rounds:
                    self.abort(ConnectionError("retired connection closed"))

    def pause_writing(self) -> None:
        # Redis reads slower than we write. Every round has a deadline, and a timeout drops
        # the socket, so what we hold here is bounded by timeout x rate.
        self._held = []

    def resume_writing(self) -> None:
        held, self._held = self._held, None
        if held and self._transport is not None:
            self._transport.write(b"".join(held))

    def connection_lost(self, exc: Exception | None) -> None:
        self.abort(ConnectionError("connection to Redis lost"))

    def retire(self) -> None:
        """Take no new rounds (the pipe dials another) and close once the rounds in flight
        have their replies: they were answered, and dropping them would fail their callers."""
        self._retired = True
        self._stop_using(self)
        if not self._rounds:
            self.abort(ConnectionError("retired connection closed"))

    def abort(self, exc: Exception) -> None:
        """Drop the socket; every round in flight fails, since its replies will never come."""
        if not self.closed:
            self.closed = True
            self._stop_using(self)
            if self._transport is not None:
                self._transport.abort()
        rounds, self._rounds = self._rounds, deque()
        for round_ in rounds:
            round_.finish(exc)

    async def handshake(self, data: bytes, count: int) -> None:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()

        def done(result: Result) -> None:
            if not future.done():  # a timed-out handshake is no longer waited for
                future.set_result(result)

        self.write(data, Round(count, done))
        result = await future
        if isinstance(result, Exception):
            raise result
        for reply in result:
            if isinstance(reply, hiredis.ReplyError):  # the code only: never echo a password
                raise HandshakeRefused(str(reply).split(" ", 1)[0])


class RedisPipe:
    """One connection to a plain Redis, opened on first use and replaced after a loss.

    `template` is an unconnected redis-py connection built from the URL: its host/port or
    path, TLS context, credentials and db are used as redis-py would use them.
    """

    def __init__(self, template: AbstractConnection, connect_timeout: float) -> None:
        self._template = template
        self._connect_timeout = connect_timeout
        self._connection: _Connection | None = None  # set once its handshake is done
        self._waiting: list[tuple[bytes, Round]] = []  # written when a connection is ready
        self._connecting: asyncio.Task[None] | None = None
        self._odd_failures = Throttle(10.0)  # one warning per 10 s: each call dials again

    def idle(self) -> bool:
        """Connected, and no reply outstanding: a write now goes out alone anyway."""
        connection = self._connection
        return connection is not None and connection.idle

    def send(self, data: bytes, count: int, deadline: float, done: Done) -> None:
        """Write `count` pre-encoded commands; `done` gets their replies in order, or the error
        that lost them: TimeoutError past `deadline` (loop time), ConnectionError, OSError."""
        loop = asyncio.get_running_loop()
        round_ = Round(count, done)
        round_.timer = loop.call_at(deadline, self._expire, round_)
        if self._connection is not None:
            self._connection.write(data, round_)
            return
        self._waiting.append((data, round_))
        if self._connecting is None:
            self._connecting = loop.create_task(self._connect())

    def reconnect(self) -> None:
        """The next send dials again; the rounds in flight on the old connection still get
        their replies there (a timeout still drops it with them), then it closes."""
        if self._connection is not None:
            self._connection.retire()

    async def close(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connecting
        self._fail_waiting(ConnectionError("quota store closed"))
        if self._connection is not None:
            self._connection.abort(ConnectionError("quota store closed"))

    def _expire(self, round_: Round) -> None:
        # No reply in time: fail closed. The socket goes too, with every round on it: a Redis
        # that stalls past the timeout, or a peer gone without a reset, is not trusted with the
        # next round; a fresh connection (or its failure) tells the truth sooner.
        if round_.connection is not None:
            round_.connection.abort(TimeoutError("no reply from Redis in time"))
        else:
            self._waiting = [w for w in self._waiting if w[1] is not round_]
            round_.finish(TimeoutError("no connection to Redis in time"))

    def _stop_using(self, connection: _Connection) -> None:
        if self._connection is connection:
            self._connection = None  # the next send dials again

    def _fail_waiting(self, exc: Exception) -> None:
        waiting, self._waiting = self._waiting, []
        for _, round_ in waiting:
            round_.finish(exc)

    async def _connect(self) -> None:
        connection = _Connection(self._stop_using)
        try:
            async with asyncio.timeout(self._connect_timeout):
                await self._open(connection)
                if hello := self._hello():
                    await connection.handshake(*hello)
        except BaseException as exc:
            failure = exc if isinstance(exc, Exception) else ConnectionError("connect cancelled")
            connection.abort(failure)
            self._fail_waiting(failure)
            if not isinstance(exc, Exception):  # cancelled: close() awaits it
                raise
            # Any error fails these rounds as a refused connection does. Raised in this task,
            # which nobody awaits, it was a "Task exception was never retrieved" traceback per
            # call (a TLS context redis-py could not build: ValueError). Unlike a refusal or
            # a timeout its reason is not obvious: one line, at most every 10 s.
            if not isinstance(exc, OSError | TimeoutError) and self._odd_failures.ready():
                log.warning("cannot connect to Redis: %s: %s", type(exc).__name__, exc)
            return
        finally:
            self._connecting = None
        if connection.closed:  # lost between the handshake reply and this task's turn
            self._fail_waiting(ConnectionError("connection to Redis lost"))
            return
        self._connection = connection
        waiting, self._waiting = self._waiting, []
        for data, round_ in waiting:
            connection.write(data, round_)

    async def _open(self, connection: _Connection) -> None:
        loop, template = asyncio.get_running_loop(), self._template
        if isinstance(template, UnixConnection):
            await loop.create_unix_connection(lambda: connection, template.path)
            return
        assert isinstance(template, Connection)
        tls = template.ssl_context.get() if isinstance(template, SSLConnection) else None
        transport, _ = await loop.create_connection(lambda: connection, template.host,
                                                    template.port, ssl=tls)
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if template.socket_keepalive:  # as redis-py does: notice a peer gone silent
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            options: dict[int, int | bytes] = template.socket_keepalive_options  # type: ignore[assignment]
            for option, value in options.items():
                sock.setsockopt(socket.IPPROTO_TCP, option, value)

    def _hello(self) -> tuple[bytes, int] | None:
        """AUTH, SETNAME and SELECT as redis-py's connect sends them (RESP2), in one write."""
        template, commands = self._template, []
        if template.password:
            user = (template.username,) if template.username else ()
            commands.append(resp.command("AUTH", *user, template.password))
        if template.client_name:
            commands.append(resp.command("CLIENT", "SETNAME", template.client_name))
        if template.db:
            commands.append(resp.command("SELECT", template.db))
        return (b"".join(commands), len(commands)) if commands else None
