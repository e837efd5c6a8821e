"""Two separate processes, one Redis (plain or Cluster): 200 concurrent requests for a bucket
that holds 20 with a negligible refill admit exactly 20."""

from __future__ import annotations

import asyncio
import multiprocessing
import os

from tenantgate.config.load import parse_config
from tenantgate.quota.limiter import Limiter
from tenantgate.quota.redis import RedisStore
from tenantgate.testing.redis import RedisClusterServers, RedisServer

CONFIG = """
context:
  active_key: k1
  keys: [{id: k1, secret: {fromEnv: TG_QUOTA_TEST_SECRET}}]
quota:
  enabled: true
  store: redis
  redis: {url: 'URL', timeout: 2s}
  default_plan: free
  plans:
    free: {limits: [{rate: '20/day', burst: 20}], mode: MODE}
"""


def _replica(url: str, mode: str, requests: int, start: multiprocessing.synchronize.Barrier,
             results: multiprocessing.Queue[int]) -> None:
    os.environ["TG_QUOTA_TEST_SECRET"] = "x" * 40

    async def main() -> int:
        config = parse_config(CONFIG.replace("URL", url).replace("MODE", mode))
        store = RedisStore(config.quota.redis)
        limiter = Limiter(config, store, store.close)
        await limiter.start()
        plan = limiter.plan_for("acme", None, False)
        assert plan is not None
        start.wait()  # both processes fire together
        verdicts = await asyncio.gather(*(limiter.check(plan, "acme", "GET", "/")
                                          for _ in range(requests)))
        await limiter.close()
        return sum(v.admitted for v in verdicts)

    results.put(asyncio.run(main()))


def admitted_by_two_processes(url: str, mode: str = "exact") -> int:
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_replica, args=(url, mode, 100, start, results))
             for _ in range(2)]
    for proc in procs:
        proc.start()
    try:
        return sum(results.get(timeout=60) for _ in procs)
    finally:
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()


def test_two_processes_one_redis_admit_exactly_20(fresh_redis: RedisServer) -> None:
    assert admitted_by_two_processes(fresh_redis.url) == 20


def test_two_processes_one_redis_cluster_admit_exactly_20(
        redis_cluster: RedisClusterServers) -> None:
    import redis

    for node in redis_cluster.nodes:
        with redis.Redis(port=node.port) as client:
            client.flushall()
    assert admitted_by_two_processes(redis_cluster.url) == 20
