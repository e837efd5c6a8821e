"""The hot-path connection to plain Redis (quota/pipe.py) against real redis-servers: restarts,
lost scripts, outages, stalls, credentials, databases, unix sockets, and big batches in order.

Every test runs on the stdlib loop and on uvloop (conftest.py). Outcomes are asserted, never
durations.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client import REGISTRY
from tenantgate.config.quota import RedisConfig
from tenantgate.errors import QuotaStoreUnavailable
from tenantgate.quota.redis import GCRA, RedisStore
from tenantgate.quota.store import Bucket, Outcome
from tenantgate.testing.ports import ReservedPort
from tenantgate.testing.redis import RedisServer


def bucket(tenant: str = "acme", burst: int = 5) -> Bucket:
    return Bucket(f"tg:{{t:{tenant}}}:plan:1", "plan", burst, 86400.0, burst)


def store_for(url: str, **redis: Any) -> RedisStore:
    return RedisStore(RedisConfig.model_validate({"url": url, "timeout": "2s", **redis}))


async def outcome_once_back(store: RedisStore, b: Bucket, attempts: int = 50) -> Outcome:
    """The first decision Redis makes after an outage (errors on the way are expected)."""
    for _ in range(attempts):
        try:
            return await store.acquire([b])
        except QuotaStoreUnavailable:
            await asyncio.sleep(0.1)
    raise AssertionError("the store did not come back")


def store_errors() -> float:
    return REGISTRY.get_sample_value("tenantgate_quota_store_errors_total",
                                     {"store": "redis"}) or 0.0


@pytest.fixture
def killable() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.close()


@pytest.fixture
async def store(fresh_redis: RedisServer) -> AsyncIterator[RedisStore]:
    made = store_for(fresh_redis.url)
    await made.start()  # scripts loaded: no NOSCRIPT round unless a test provokes one
    yield made
    await made.close()


async def test_many_concurrent_calls_go_in_one_write_and_resolve_in_order(
        store: RedisStore, monkeypatch: pytest.MonkeyPatch) -> None:
    assert store._pipe is not None
    rounds: list[int] = []
    send = store._pipe.send
    monkeypatch.setattr(store._pipe, "send", lambda data, count, *rest: (
        rounds.append(count), send(data, count, *rest))[1])
    # Call i has a bucket of burst i + 1 to itself, so its reply names it: i remaining.
    buckets = [bucket(f"t{i}", burst=i + 1) for i in range(300)]
    outcomes = await asyncio.gather(*(store.acquire([b]) for b in buckets))
    assert [o.states[0].remaining for o in outcomes] == list(range(300))
    assert rounds == [300]


async def test_a_per_call_error_reply_fails_only_that_caller(
        store: RedisStore, fresh_redis: RedisServer) -> None:
    with redis.Redis(port=fresh_redis.port) as admin:
        admin.hset("tg:{t:broken}:plan:1", "x", "1")  # GET on a hash: WRONGTYPE in the script
    results = await asyncio.gather(store.acquire([bucket("ok")]), store.acquire([bucket("broken")]),
                                   store.acquire([bucket("ok")]), return_exceptions=True)
    assert [type(r).__name__ for r in results] == ["Outcome", "QuotaStoreUnavailable", "Outcome"]
    assert not store.breaker.is_open


async def test_scripts_flushed_mid_run_are_reloaded_and_each_call_charged_once(
        store: RedisStore, fresh_redis: RedisServer) -> None:
    assert (await store.acquire([bucket(burst=20)])).admitted
    with redis.Redis(port=fresh_redis.port) as admin:
        admin.script_flush()
        outcomes = await asyncio.gather(*(store.acquire([bucket(burst=20)]) for _ in range(25)))
        assert admin.script_exists(GCRA.sha) == [True]
    # 1 before the flush + 25 resent after NOSCRIPT: exactly 19 more fit in the burst of 20.
    assert sum(o.admitted for o in outcomes) == 19


async def test_redis_restarted_mid_run_reconnects_and_reloads_the_script(
        killable: RedisServer) -> None:
    made = store_for(killable.url, circuit={"failures": 100})
    try:
        assert [(await made.acquire([bucket()])).admitted for _ in range(2)] == [True, True]
        killable.stop()
        killable.start()  # same port, empty: no keys, no scripts
        outcome = await outcome_once_back(made, bucket())
        later = [(await made.acquire([bucket()])).admitted for _ in range(5)]
    finally:
        await made.close()
    assert outcome.admitted and outcome.states[0].remaining == 4  # a fresh bucket of 5
    assert later == [True] * 4 + [False]


async def test_redis_stopped_fails_typed_counts_errors_and_opens_the_circuit(
        killable: RedisServer) -> None:
    made = store_for(killable.url, circuit={"failures": 2, "open_for": "1h"})
    try:
        assert (await made.acquire([bucket()])).admitted
        killable.stop()
        errors = store_errors()
        failures = [await asyncio.gather(made.acquire([bucket()]), made.acquire([bucket()]),
                                         return_exceptions=True) for _ in range(2)]
        tried = store_errors() - errors
        failures.append(await asyncio.gather(made.acquire([bucket()]), made.acquire([bucket()]),
                                             return_exceptions=True))
    finally:
        await made.close()
    assert all(isinstance(r, QuotaStoreUnavailable) for pair in failures for r in pair)
    # Both share one batch; the open circuit still says why it opened.
    assert [str(r).split(";")[0] for r in failures[2]] == ["circuit open"] * 2
    assert "last error ConnectionRefusedError: [Errno 111]" in str(failures[2][0])
    # Every failed round trip is counted as an error (the first pair may have gone out as two
    # rounds on the dying connection: one failure for the circuit); the open circuit sent none.
    assert tried >= 2
    assert store_errors() - errors == tried
    assert made.breaker.is_open


async def test_redis_down_at_first_use_then_up(tmp_path: Path) -> None:
    reserved = ReservedPort()  # nothing listens on it (the connect is refused), nobody can
    server = RedisServer(port=reserved.port)  # take it; pinned: it comes up where it was
    made = store_for(server.url, circuit={"failures": 100})
    try:
        with pytest.raises(QuotaStoreUnavailable):
            await made.acquire([bucket()])
        reserved.release()
        server.start()
        assert server.port == reserved.port
        assert (await outcome_once_back(made, bucket())).admitted
    finally:
        await made.close()
        reserved.release()
        server.close()


@contextlib.contextmanager
def stalled(server: RedisServer) -> Iterator[None]:
    """The server stopped (SIGSTOP) until the block ends: it answers nothing however long the
    calls take to leave, unlike a CLIENT PAUSE window that a slow run could outlast."""
    assert server.pid is not None
    os.kill(server.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.pid, signal.SIGCONT)


async def test_a_paused_redis_fails_closed_in_time_then_recovers(
        killable: RedisServer) -> None:
    made = store_for(killable.url, timeout="100ms", circuit={"failures": 100})
    try:
        assert (await made.acquire([bucket()])).admitted
        with stalled(killable), pytest.raises(QuotaStoreUnavailable, match="TimeoutError"):
            await made.acquire([bucket()])
        assert (await outcome_once_back(made, bucket())).admitted
    finally:
        await made.close()


async def test_rounds_stalled_together_count_once_toward_the_circuit(
        killable: RedisServer) -> None:
    # Under load several rounds are in flight when Redis stalls; they time out together. One
    # stall is one failure: before, each round counted, and a pause of a little over the
    # timeout opened the circuit, failing every request for open_for.
    made = store_for(killable.url, timeout="2s", circuit={"failures": 2, "open_for": "1h"})
    try:
        assert (await made.acquire([bucket()])).admitted
        errors = store_errors()
        with stalled(killable):  # until every call has timed out
            calls = []
            for i in range(4):  # apart: each call goes out in its own round, behind the first
                calls.append(asyncio.ensure_future(made.acquire([bucket(f"t{i}")])))
                await asyncio.sleep(0.01)
            results = await asyncio.gather(*calls, return_exceptions=True)
        assert [str(r).split(":")[0] for r in results] == ["TimeoutError"] * 4
        assert store_errors() - errors >= 2  # several rounds failed...
        assert not made.breaker.is_open  # ...for one cause
        assert (await outcome_once_back(made, bucket())).admitted
    finally:
        await made.close()


async def test_a_server_that_never_answers_fails_every_call_of_the_batch() -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # read nothing, answer nothing

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    made = store_for(f"redis://127.0.0.1:{port}/0", timeout="100ms")
    try:
        results = await asyncio.gather(*(made.acquire([bucket(f"t{i}")]) for i in range(5)),
                                       return_exceptions=True)
    finally:
        await made.close()
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()
    assert [str(r).split(":")[0] for r in results] == ["TimeoutError"] * 5
    assert len(accepted) == 1  # one connection for the whole batch


async def test_a_connection_redis_py_cannot_build_fails_each_call_with_one_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    # A TLS context redis-py builds only as it connects (the config refuses this version now):
    # its ValueError escaped the connecting task, a "Task exception was never retrieved"
    # traceback per call.
    made = store_for("rediss://127.0.0.1:1/0")
    assert made._pipe is not None
    made._pipe._template.ssl_context.min_version = 12  # type: ignore[attr-defined]
    loop = asyncio.get_running_loop()
    unhandled: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: unhandled.append(context))
    errors = store_errors()
    try:
        with caplog.at_level(logging.WARNING, logger="tenantgate.quota"):
            results = [await asyncio.gather(made.acquire([bucket()]), return_exceptions=True)
                       for _ in range(3)]
            gc.collect()  # a task's unretrieved exception is reported when it is collected
            await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
        await made.close()
    assert [str(r) for [r] in results] == ["ValueError: Unsupported TLS/SSL version 0xc"] * 3
    assert all(isinstance(r, QuotaStoreUnavailable) for [r] in results)
    assert store_errors() == errors + 3
    assert unhandled == []
    assert [r.getMessage() for r in caplog.records] == [
        "cannot connect to Redis: ValueError: Unsupported TLS/SSL version 0xc"]


@pytest.fixture
def acl_user(fresh_redis: RedisServer) -> Iterator[str]:
    with redis.Redis(port=fresh_redis.port) as admin:
        admin.acl_setuser("tg-quota", enabled=True, passwords=["+s3cret"], keys=["tg:*"],
                          commands=["+@all"])
        yield f"redis://tg-quota:s3cret@127.0.0.1:{fresh_redis.port}/0"
        admin.acl_deluser("tg-quota")


async def test_an_acl_user_from_the_url_authenticates(acl_user: str) -> None:
    made = store_for(acl_user)
    try:
        assert (await made.acquire([bucket()])).admitted
    finally:
        await made.close()


async def test_a_wrong_acl_password_is_unavailable_not_a_crash(acl_user: str) -> None:
    made = store_for(acl_user.replace("s3cret", "wrong"), circuit={"failures": 100})
    try:
        with pytest.raises(QuotaStoreUnavailable, match="HandshakeRefused"):
            await made.acquire([bucket()])
    finally:
        await made.close()


async def test_the_database_in_the_url_is_selected(fresh_redis: RedisServer) -> None:
    made = store_for(f"redis://127.0.0.1:{fresh_redis.port}/3")
    try:
        assert (await made.acquire([bucket()])).admitted
    finally:
        await made.close()
    with redis.Redis(port=fresh_redis.port, db=3) as db3, \
            redis.Redis(port=fresh_redis.port, db=0) as db0:
        assert (db3.exists(bucket().key), db0.exists(bucket().key)) == (1, 0)


@pytest.fixture
def unix_redis(fresh_redis: RedisServer, tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "redis.sock"
    proc = subprocess.Popen([fresh_redis.binary, "--port", "0", "--unixsocket", str(path),
                             "--save", "", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not path.exists():
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("redis-server on a unix socket did not come up")
            time.sleep(0.02)
        yield path
    finally:
        proc.kill()
        proc.wait(timeout=10)


async def test_a_unix_socket_url_limits(unix_redis: Path) -> None:
    made = store_for(f"unix://{unix_redis}?db=2")
    try:
        outcomes = [await made.acquire([bucket(burst=2)]) for _ in range(3)]
    finally:
        await made.close()
    assert [o.admitted for o in outcomes] == [True, True, False]
    with redis.Redis(unix_socket_path=str(unix_redis), db=2) as client:
        assert client.exists(bucket().key) == 1


async def test_a_connection_dialled_again_still_answers_the_rounds_in_flight_on_it(
        fresh_redis: RedisServer) -> None:
    # A READONLY reply redials (redis.py _redial): that dropped the socket with every other
    # round on it, so calls a demoted server had answered (its denials) failed as well.
    store = store_for(fresh_redis.url)
    pipe = store._pipe
    assert pipe is not None
    results: list[Any] = []
    deadline = asyncio.get_running_loop().time() + 2.0

    def first(result: Any) -> None:
        results.append(result)
        pipe.reconnect()

    try:
        ping = b"*1\r\n$4\r\nPING\r\n"
        pipe.send(ping, 1, deadline, first)  # both written on one connection, in one write
        pipe.send(ping * 2, 2, deadline, results.append)
        while len(results) < 2:
            await asyncio.sleep(0.01)
        assert results == [[b"PONG"], [b"PONG", b"PONG"]]
        assert (await store.acquire([bucket()])).admitted  # on a new connection
    finally:
        await store.close()
