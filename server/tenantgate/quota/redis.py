"""The Redis store: one EVALSHA per decision; plain, Sentinel and Cluster URLs; a breaker."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import math
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import hiredis
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import (
    BusyLoadingError,
    NoScriptError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    ResponseError,
)

from tenantgate.config.quota import RedisConfig
from tenantgate.config.redis_url import redis_hosts
from tenantgate.errors import QuotaStoreUnavailable
from tenantgate.observe import quota as metrics
from tenantgate.observe import store_errors
from tenantgate.quota import resp
from tenantgate.quota.breaker import CircuitBreaker
from tenantgate.quota.coalesce import Call, Coalescer, Pending, fail, in_tasks, settle
from tenantgate.quota.pipe import RedisPipe, Result
from tenantgate.quota.store import Bucket, BucketState, Charge, Outcome

Client = Redis | RedisCluster
_Item = TypeVar("_Item")  # one scripted call: GCRA (keys, args) or a Charge


class Script:
    """A Lua file from quota/scripts, identified by its SHA1 so EVALSHA needs no prior load."""

    def __init__(self, name: str) -> None:
        self.source = resources.files("tenantgate.quota").joinpath(f"scripts/{name}").read_text()
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()  # Redis names scripts by SHA1
        self.sha_bytes = self.sha.encode()


GCRA = Script("gcra.lua")
CHARGE = Script("charge.lua")


def connect(cfg: RedisConfig) -> tuple[Client, list[Redis]]:
    """A client for any supported URL, and the Sentinel clients behind it (closed with it);
    nothing is dialled until the first command."""
    common: dict[str, Any] = {
        "socket_timeout": cfg.timeout, "socket_connect_timeout": cfg.connect_timeout,
        "max_connections": cfg.max_connections,
    }
    # No client-side retries: the breaker and the failure mode decide, within one timeout.
    no_retry = Retry(NoBackoff(), 0)
    parts = urlsplit(cfg.url)
    password = unquote(parts.password) if parts.password else None
    if cfg.password is not None:  # the config refuses a password in both places
        password = cfg.password.value.decode()
    username = unquote(parts.username) if parts.username else None
    if parts.scheme in ("redis+cluster", "rediss+cluster"):
        nodes = [ClusterNode(h, p) for h, p in redis_hosts(parts.netloc, 6379)]
        return RedisCluster(startup_nodes=nodes, password=password, username=username,
                            ssl=parts.scheme.startswith("rediss"), **common), []
    if parts.scheme == "redis+sentinel":
        path = [p for p in parts.path.split("/") if p]
        master, db = path[0], int(path[1]) if len(path) > 1 else 0
        sentinel = Sentinel(redis_hosts(parts.netloc, 26379),
                            sentinel_kwargs={"socket_timeout": cfg.timeout,
                                             "socket_connect_timeout": cfg.connect_timeout},
                            socket_timeout=cfg.timeout,
                            socket_connect_timeout=cfg.connect_timeout)
        master_client = sentinel.master_for(master, db=db, password=password,
                                            username=username, retry=no_retry)
        return master_client, list(sentinel.sentinels)
    if cfg.password is not None:
        common["password"] = password
    return Redis.from_url(cfg.url, retry=no_retry, **common), []


def _secrets(cfg: RedisConfig) -> list[str]:
    """Every password an error could echo (masked by store_errors.describe as written and
    decoded, should Redis or redis-py ever name one)."""
    password = cfg.password.value if cfg.password is not None else None
    return store_errors.redis_secrets(cfg.url, password)


def _stale_server(message: str) -> bool:
    """A reply saying this server no longer takes writes: READONLY (demoted by a failover; a
    script's write refused inside it comes back as ERR ... -READONLY) or LOADING (restarted)."""
    return message.startswith(("READONLY ", "LOADING ")) or " -READONLY " in message


def _stale(exc: BaseException) -> bool:
    """redis-py's error for a reply _stale_server() names: ReadOnlyError and BusyLoadingError
    carry the code in their class (their message lost it), a script's refusal in its text."""
    return isinstance(exc, ReadOnlyError | BusyLoadingError) or (
        isinstance(exc, ResponseError) and _stale_server(str(exc)))


def _gcra_wire(calls: Sequence[Call]) -> bytes:
    return b"".join([resp.evalsha(GCRA.sha_bytes, keys, args) for keys, args in calls])


class RedisStore:
    name = "redis"

    def __init__(self, cfg: RedisConfig, client: Client | None = None) -> None:
        self._cfg = cfg
        metrics.declare_store(self.name)
        self._client, self._sentinels = (client, []) if client is not None else connect(cfg)
        self.breaker = CircuitBreaker(cfg.circuit.failures, cfg.circuit.open_for)
        # redis-py refuses a command outright when its pool is exhausted; queue here instead,
        # inside the timeout, so a burst waits its turn rather than failing.
        self._slots = asyncio.Semaphore(cfg.max_connections)
        self._pipe: RedisPipe | None = None
        self._secrets = _secrets(cfg)  # only to mask them, should an error ever name one
        self._cause = "none yet"  # the last error's reason: the open circuit's message says it
        self._redialling: asyncio.Task[None] | None = None
        self._redialled_at = -math.inf  # breaker.clock() of the last _redial that dialled
        if isinstance(self._client, Redis) and not isinstance(
                self._client.connection_pool, SentinelConnectionPool):
            # Plain Redis: the hot path gets its own lean connection (pipe.py), built from the
            # same URL and credentials; script loading and charges stay on redis-py.
            template = self._client.connection_pool.make_connection()
            self._pipe = RedisPipe(template, cfg.connect_timeout)
            self._coalescer = Coalescer(self._dispatch_gcra, self._pipe.idle)
        else:
            self._coalescer = Coalescer(in_tasks(self._send_gcra_batch))

    @property
    def client(self) -> Client:
        return self._client

    @property
    def failing(self) -> bool:
        return self.breaker.failing

    @property
    def cause(self) -> str:
        return self._cause

    async def start(self) -> None:
        """Load the scripts; a Redis that is down now is the failure mode's business, not ours."""
        with contextlib.suppress(QuotaStoreUnavailable):
            await self._guarded(self._load_scripts())

    async def close(self) -> None:
        if self._redialling is not None:
            await self._redialling
        if self._pipe is not None:
            await self._pipe.close()
        await self._client.aclose()
        for sentinel in self._sentinels:
            await sentinel.aclose()

    async def acquire(self, buckets: Sequence[Bucket], cost: int = 1) -> Outcome:
        args: list[int] = [cost]
        for bucket in buckets:
            args += (bucket.interval_us, bucket.tolerance_us)
        reply = await self._coalescer.submit([b.key for b in buckets], args)
        states = tuple(BucketState(int(reply[i]), int(reply[i + 1]), int(reply[i + 2]))
                       for i in range(2, len(reply), 3))
        return Outcome(reply[0] == 1, states, int(reply[1]))

    async def charge(self, items: Sequence[Charge]) -> tuple[list[int | None], int]:
        replies = await self._guarded(self._charge_pipeline(items))
        tats = [None if isinstance(r, Exception) else int(r[0]) for r in replies]
        return tats, max(int(r[1]) for r in replies if not isinstance(r, Exception))

    def _dispatch_gcra(self, batch: list[Pending]) -> None:
        """One write for the whole batch; the replies settle the callers' futures straight
        from the socket's read callback. One breaker verdict and one deadline per round trip."""
        if not self.breaker.allow():
            fail(batch, self._circuit_open())
            return
        assert self._pipe is not None
        deadline = asyncio.get_running_loop().time() + self._cfg.timeout
        self._pipe.send(_gcra_wire([call for call, _ in batch]), len(batch), deadline,
                        functools.partial(self._gcra_replied, batch, deadline,
                                          self.breaker.clock(), False))

    def _gcra_replied(self, batch: list[Pending], deadline: float, started: float,
                      reloaded: bool, result: Result) -> None:
        if isinstance(result, Exception):  # timeout, connection refused or lost
            metrics.store_error(self.name)
            self.breaker.failure(started)
            fail(batch, self._unavailable(result))
            return
        if reloaded:
            result = result[1:]  # SCRIPT LOAD's reply; had it failed, EVALSHA failed too
        missing, errors, stale = self._settle_replies(batch, result, reloaded)
        if errors and errors == len(result):
            # Redis answers but decides nothing (OOM, READONLY after a failover, BUSY): an
            # outage the breaker must see as much as a lost connection.
            self.breaker.failure(started)
        else:
            self.breaker.success()
        if stale:
            self._redial()
        if missing:
            # Redis lost its script cache (restart, failover): those calls evaluated nothing.
            # Load it and resend only them, behind the load in the same write (the others ran
            # and must not be charged twice); still within the first send's deadline.
            assert self._pipe is not None
            data = resp.command("SCRIPT", "LOAD", GCRA.source) + _gcra_wire(
                [call for call, _ in missing])
            self._pipe.send(data, 1 + len(missing), deadline,
                            functools.partial(self._gcra_replied, missing, deadline, started,
                                              True))

    def _settle_replies(self, batch: list[Pending], replies: list[Any], reloaded: bool
                        ) -> tuple[list[Pending], int, bool]:
        """Settle each caller with its reply, an error reply as that caller's failure only.
        Returns the calls answered NOSCRIPT (not settled: to resend), the error count, and
        whether an error said the server no longer takes writes."""
        missing: list[Pending] = []
        errors, stale = 0, False
        for pending, reply in zip(batch, replies, strict=True):
            if isinstance(reply, hiredis.ReplyError):
                if not reloaded and str(reply).startswith("NOSCRIPT"):
                    missing.append(pending)
                    continue
                metrics.store_error(self.name)
                errors += 1
                stale = stale or _stale_server(str(reply))
                reply = self._unavailable(ResponseError(str(reply)))  # as redis-py names it
            settle(pending[1], reply)
        return missing, errors, stale

    async def _send_gcra_batch(self, calls: list[tuple[list[str], list[int]]]) -> list[Any]:
        if isinstance(self._client, RedisCluster):
            # redis-py refuses scripts in cluster pipelines: one call per request, concurrently.
            return list(await asyncio.gather(
                *(self._guarded(self._evalsha(GCRA, keys, args)) for keys, args in calls),
                return_exceptions=True))
        return list(await self._guarded(self._gcra_pipeline(calls)))

    async def _gcra_pipeline(self, calls: list[tuple[list[str], list[int]]]) -> list[Any]:
        replies = await self._reloading_script(GCRA, calls, self._run_gcra)
        errors = [r for r in replies if isinstance(r, Exception)]
        if errors and len(errors) == len(replies):
            raise errors[0]  # as above: _guarded counts it and tells the breaker
        for _ in errors:
            metrics.store_error(self.name)
        if any(_stale(r) for r in errors):
            self._redial()
        # Per-call Redis errors become the typed store failure for that caller only.
        return [self._unavailable(r) if isinstance(r, Exception) else r for r in replies]

    async def _reloading_script(self, script: Script, items: Sequence[_Item],
                                run: Callable[[Sequence[_Item]], Awaitable[list[Any]]]
                                ) -> list[Any]:
        """`run(items)`, one reply per item. Items answered NOSCRIPT (Redis lost its script
        cache: restart, failover) evaluated nothing: load the script once and resend only
        them; the others ran and must not be charged twice."""
        replies = await run(items)
        missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
        if missing:
            await self._client.script_load(script.source)
            for i, reply in zip(missing, await run([items[i] for i in missing]), strict=True):
                replies[i] = reply
        return replies

    async def _run_gcra(self, calls: Sequence[tuple[list[str], list[int]]]) -> list[Any]:
        """One write of pre-encoded EVALSHA commands, one reply each, on one connection.

        Encoding RESP here (resp.py) instead of through redis-py's command packing takes the
        largest share of the client's CPU per Check off; redis-py still owns the connection,
        its pool, reconnects and reply parsing (hiredis).
        """
        assert isinstance(self._client, Redis)  # Cluster clients take the per-call path
        pool = self._client.connection_pool
        connection = await pool.get_connection()
        try:
            await connection.send_packed_command(_gcra_wire(calls))
            replies: list[Any] = []
            for _ in calls:
                try:
                    replies.append(await connection.read_response())
                except ResponseError as exc:  # an error reply: that call's own failure
                    replies.append(exc)
            return replies
        except BaseException:
            await connection.disconnect()  # a half-read connection must not be reused
            raise
        finally:
            await pool.release(connection)

    async def _guarded(self, work: Any) -> Any:
        """Run one store round trip under the breaker and the timeout; failures become typed."""
        if not self.breaker.allow():
            work.close()  # never awaited: do not leave a coroutine warning behind
            raise self._circuit_open()
        ok, started = False, self.breaker.clock()
        deadline = asyncio.get_running_loop().time() + self._cfg.timeout
        try:
            async with asyncio.timeout_at(deadline), self._slots:
                result = await work
            ok = True
            return result
        # RedisClusterException is no RedisError: redis-py raises it when no cluster node
        # answers, or a slot has no node; the store is unavailable then, not our bug.
        except (RedisError, RedisClusterException, OSError, TimeoutError) as exc:
            metrics.store_error(self.name)
            if _stale(exc):
                self._redial()
                await self._redialled_by(deadline)
            raise self._unavailable(exc) from None
        finally:
            work.close()  # a no-op once awaited; stops a never-started one from warning
            # A cancelled call counts as a failure too, so a half-open probe never gets stuck.
            self.breaker.success() if ok else self.breaker.failure(started)

    async def _redialled_by(self, deadline: float) -> None:
        """Wait for the pool's disconnect (so the next call takes a fresh connection), but
        not past this call's deadline: a slow disconnect held the caller past redis.timeout,
        and Envoy, its own timeout gone, answered 503 whatever failure_mode said. Left
        running, it ends on its own; close() waits for it."""
        if self._redialling is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(deadline):
                await asyncio.shield(self._redialling)

    def _unavailable(self, exc: BaseException) -> QuotaStoreUnavailable:
        """The typed failure, saying why: the limiter's warning repeats it."""
        self._cause = store_errors.describe(exc, self._secrets)
        return QuotaStoreUnavailable(self._cause)

    def _circuit_open(self) -> QuotaStoreUnavailable:
        return QuotaStoreUnavailable(f"circuit open; last error {self._cause}")

    def _redial(self) -> None:
        """This server refused as a replica (or while loading): drop every connection to it,
        so the next call resolves the name again and dials whatever it points at now. After
        a failover (managed Redis moves the DNS name) the old connections were otherwise kept,
        and refused every call, for as long as they lived.

        At most once per circuit.open_for: a replica still answers the calls that write
        nothing (denials), so its rounds can mix answers and READONLY refusals, and the
        breaker, seeing answers, never opens. Redialled on each such round, it made a new
        connection every round (87 a second) and dropped the other rounds in flight."""
        now = self.breaker.clock()
        if now - self._redialled_at < self._cfg.circuit.open_for:
            return
        self._redialled_at = now
        if self._pipe is not None:
            self._pipe.reconnect()
        if isinstance(self._client, Redis) and self._redialling is None:
            self._redialling = asyncio.get_running_loop().create_task(self._disconnect_pool())

    async def _disconnect_pool(self) -> None:
        assert isinstance(self._client, Redis)
        try:  # redis-py's connections, those in use too: they talk to the same server
            await self._client.connection_pool.disconnect()
        except (RedisError, OSError, TimeoutError):
            pass  # a connection that fails to close is closed enough
        finally:
            self._redialling = None

    async def _load_scripts(self) -> None:
        for script in (GCRA, CHARGE):
            await self._client.script_load(script.source)

    async def _evalsha(self, script: Script, keys: list[str], args: list[int]) -> Any:
        try:
            return await self._client.evalsha(script.sha, len(keys), *keys, *args)
        except NoScriptError:
            # Redis restarted or failed over and lost its script cache: load once, try again.
            await self._client.script_load(script.source)
            return await self._client.evalsha(script.sha, len(keys), *keys, *args)

    async def _charge_pipeline(self, items: Sequence[Charge]) -> list[Any]:
        """One reply per charge, an exception where that charge failed alone (an error reply,
        or on Cluster one node's failure): the others were made and must be settled as made,
        not sent again. When every charge failed, the call failed: _guarded tells the breaker."""
        replies = await self._reloading_script(CHARGE, items, self._run_charges)
        errors = [r for r in replies if isinstance(r, Exception)]
        if errors and len(errors) == len(replies):
            raise errors[0]
        for _ in errors:
            metrics.store_error(self.name)
        return replies

    async def _run_charges(self, items: Sequence[Charge]) -> list[Any]:
        if isinstance(self._client, RedisCluster):
            # redis-py refuses scripts in cluster pipelines: one call per bucket, concurrently,
            # each with a deadline inside the whole call's: a node that hangs fails its own
            # charges, and those its healthy peers made settle as made (under the one timeout
            # they were all sent again, at every sync, for as long as it hung).
            deadline = self._cfg.timeout * _CLUSTER_CALL_SHARE
            return list(await asyncio.gather(
                *(asyncio.wait_for(self._client.evalsha(
                    CHARGE.sha, 1, bucket.key, hits, bucket.interval_us, floor), deadline)
                  for bucket, hits, floor in items), return_exceptions=True))
        pipe = self._client.pipeline(transaction=False)
        for bucket, hits, floor in items:
            pipe.evalsha(CHARGE.sha, 1, bucket.key, hits, bucket.interval_us, floor)
        return list(await pipe.execute(raise_on_error=False))


# A Cluster charge's share of redis.timeout: its own deadline must pass before the whole call's.
_CLUSTER_CALL_SHARE = 0.8


def _store_key(cfg: RedisConfig) -> str:
    """Equal for configs that can share one connection. The dump leaves out the password's
    value (only where it comes from), so its digest is added: a password rotated in the
    file and picked up by SIGHUP gets a new connection that authenticates with it."""
    password = cfg.password.value if cfg.password is not None else b""
    return f"{cfg.model_dump_json()}|{hashlib.sha256(password).hexdigest()}"


class SharedStores:
    """Stores that outlive one Runtime: a SIGHUP rebuild reuses the connection (and the
    embedded store's buckets, which a reload must not reset to full)."""

    def __init__(self) -> None:
        self._redis: dict[str, tuple[RedisStore, int]] = {}

    def acquire_redis(self, cfg: RedisConfig) -> RedisStore:
        key = _store_key(cfg)
        store, users = self._redis.get(key, (None, 0))
        if store is None:
            store = RedisStore(cfg)
        self._redis[key] = (store, users + 1)
        return store

    async def release_redis(self, cfg: RedisConfig) -> None:
        key = _store_key(cfg)
        store, users = self._redis[key]
        if users > 1:
            self._redis[key] = (store, users - 1)
            return
        del self._redis[key]
        await store.close()
