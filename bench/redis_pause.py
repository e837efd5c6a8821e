"""What a short Redis stall costs through Envoy: refused requests while Redis is paused.

Same stack as bench/envoy_bench.py (Envoy + tenantgate, quota in Redis, fail closed). Per run,
wrk drives 32 connections for 5 s; after 2 s Redis is stopped with SIGSTOP for --pause ms (a
stall: its connections stay open, nothing is answered), then continued. A stall a little over
the 100 ms store timeout should cost about the requests that were waiting on Redis, not a
circuit opened for seconds.

    .venv/bin/python bench/redis_pause.py                    # 150 ms, exact and batched
    .venv/bin/python bench/redis_pause.py --pause 1000 --runs 3
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

from envoy_bench import denials, signing_setup, tenantgate_behind_envoy, wrk
from tenantgate.testing.envoy import EnvoyProcess
from tenantgate.testing.redis import RedisServer

SECONDS, PAUSE_AFTER = 5.0, 2.0


def pause(pid: int, seconds: float) -> None:
    time.sleep(PAUSE_AFTER)
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(seconds)
    finally:
        os.kill(pid, signal.SIGCONT)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pause", type=float, default=150, help="stall length in ms")
    parser.add_argument("--runs", type=int, default=2, help="runs per quota mode")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk not found: apt-get install -y wrk", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="tg-redis-pause-"))
    jwk, token = signing_setup(work)
    modes = ("exact", "batched")
    with contextlib.ExitStack() as stack:
        redis = stack.enter_context(RedisServer())
        assert redis.pid is not None
        envoys: dict[str, EnvoyProcess] = {}
        for mode in modes:
            _, envoy, _ = tenantgate_behind_envoy(stack, work, mode, redis.url, jwk)
            envoys[mode] = stack.enter_context(envoy)
        for _ in range(args.runs):
            for mode in modes:
                port = envoys[mode].port  # type: ignore[attr-defined]
                wrk(port, token, 1, 8)  # warm-up
                stall = threading.Thread(target=pause, args=(redis.pid, args.pause / 1000))
                stall.start()
                run = wrk(port, token, SECONDS, 32)
                stall.join()
                print(f"{mode:8} Redis paused {args.pause:g} ms: {run.rps * SECONDS:,.0f} "
                      f"requests, {run.non_2xx:,} refused", flush=True)
        for mode in modes:
            print(f"{mode:8} denials in the audit log: {dict(denials(work / mode / 'audit.log'))}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
