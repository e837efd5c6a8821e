"""A bounded gRPC Check load generator: several processes, each an asyncio loop keeping a fixed
number of Checks in flight, sending pre-serialized requests, recording every latency.

Used where every request must differ (the uncached path: one new token per request), which
h2load cannot do. Prints one JSON object: completed, errors, seconds, latencies (µs, sampled).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import time
from pathlib import Path

import grpc

METHOD = "/envoy.service.auth.v3.Authorization/Check"


async def _worker_loop(target: str, bodies: list[bytes], concurrency: int, seconds: float
                       ) -> tuple[int, int, list[float], float]:
    channel = grpc.aio.insecure_channel(target)
    call = channel.unary_unary(METHOD, request_serializer=None, response_deserializer=None)
    latencies: list[float] = []
    errors = 0
    index = 0
    await channel.channel_ready()
    began = time.perf_counter()
    deadline = began + seconds

    async def one() -> None:
        nonlocal index, errors
        while time.perf_counter() < deadline and index < len(bodies):
            body = bodies[index]
            index += 1
            started = time.perf_counter()
            try:
                await call(body, timeout=5)
            except grpc.aio.AioRpcError:
                errors += 1
                continue
            latencies.append((time.perf_counter() - started) * 1e6)

    await asyncio.gather(*(one() for _ in range(concurrency)))
    elapsed = time.perf_counter() - began
    await channel.close()
    return len(latencies), errors, latencies, elapsed


def _process(target: str, path: str, start: int, step: int, concurrency: int, seconds: float,
             out: mp.Queue) -> None:  # type: ignore[type-arg]
    import uvloop

    lines = Path(path).read_bytes().split(b"\n")
    bodies = [bytes.fromhex(line.decode()) for line in lines[start::step] if line]
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        out.put(runner.run(_worker_loop(target, bodies, concurrency, seconds)))


def run(target: str, bodies_file: str, processes: int, concurrency: int, seconds: float
        ) -> dict[str, object]:
    queue: mp.Queue = mp.Queue()  # type: ignore[type-arg]
    procs = [mp.Process(target=_process, args=(target, bodies_file, i, processes,
                                               concurrency, seconds, queue))
             for i in range(processes)]
    for p in procs:
        p.start()
    results = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    elapsed = max(r[3] for r in results)
    latencies = sorted(x for r in results for x in r[2])
    return {"completed": sum(r[0] for r in results), "errors": sum(r[1] for r in results),
            "seconds": elapsed, "latencies_us": latencies}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", required=True)
    parser.add_argument("--bodies", required=True, help="file: one hex-encoded request per line")
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    result = run(args.target, args.bodies, args.processes, args.concurrency, args.seconds)
    print(json.dumps({k: v for k, v in result.items() if k != "latencies_us"}))


if __name__ == "__main__":
    main()
