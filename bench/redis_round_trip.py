"""What one `exact` quota round trip to Redis costs, and why: through the hot path's own
connection (quota/pipe.py) on uvloop, sequential calls to a throwaway redis-server, timed from
the write to the settled reply.

  PING                      the floor: the protocol and two process wake-ups
  EVALSHA 'return 1'        Lua's fixed cost
  GCRA, one bucket          the script an `exact` Check runs (quota/scripts/gcra.lua)

Each back to back (both processes stay awake) and spaced 1 ms apart (each call wakes both
from idle, as at one connection through Envoy, where the loop sleeps between Checks).

    .venv/bin/python bench/redis_round_trip.py
    .venv/bin/python bench/redis_round_trip.py --calls 5000
"""

from __future__ import annotations

import argparse
import asyncio
import time

import uvloop
from redis.asyncio import Redis
from tenantgate.quota import resp
from tenantgate.quota.pipe import RedisPipe
from tenantgate.quota.redis import GCRA
from tenantgate.testing.redis import RedisServer

SPACING = 0.001  # s between spaced calls
ONE_BUCKET = (["{t:bench}:1/60s"], [1, 600, 60_000_000])  # cost 1; 100000/min, burst 100000


async def timed_call(pipe: RedisPipe, data: bytes) -> int:
    loop = asyncio.get_running_loop()
    reply: asyncio.Future[object] = loop.create_future()
    started = time.perf_counter_ns()
    pipe.send(data, 1, loop.time() + 1.0, reply.set_result)
    result = await reply
    if isinstance(result, Exception):
        raise result
    return time.perf_counter_ns() - started


async def measure(url: str, calls: int) -> None:
    client = Redis.from_url(url)
    trivial = await client.script_load("return 1")
    await client.script_load(GCRA.source)
    pipe = RedisPipe(client.connection_pool.make_connection(), 1.0)
    commands = {
        "PING": resp.command("PING"),
        "EVALSHA 'return 1'": resp.command("EVALSHA", trivial, 0),
        "GCRA, one bucket": resp.evalsha(GCRA.sha_bytes, *ONE_BUCKET),
    }
    try:
        await timed_call(pipe, commands["PING"])  # connects
        print("| call | back to back p50 / p90 µs | spaced 1 ms p50 / p90 µs |\n|---|---|---|")
        for name, data in commands.items():
            row = []
            for spaced in (False, True):
                samples = []
                for _ in range(calls):
                    if spaced:
                        await asyncio.sleep(SPACING)
                    samples.append(await timed_call(pipe, data))
                samples.sort()
                row.append(f"{samples[len(samples) // 2] / 1000:.1f} / "
                           f"{samples[len(samples) * 9 // 10] / 1000:.1f}")
            print(f"| {name} | {row[0]} | {row[1]} |", flush=True)
    finally:
        await pipe.close()
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000, help="per command and spacing")
    args = parser.parse_args()
    with RedisServer() as redis:
        print(f"redis-server {redis.binary}, {args.calls} calls each")
        uvloop.run(measure(redis.url, args.calls))


if __name__ == "__main__":
    main()
