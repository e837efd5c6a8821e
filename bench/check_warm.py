"""A cached-token Check in a tight loop: tenantgate's own Python cost with warm caches.

Builds the benchmark's runtime (same config as check_bench.py: one issuer, a registry tenant,
a `{tenant}` route, audit at 1 %, metrics), verifies the token once, then calls the Check
handler directly, without gRPC or an event loop. Under load the same work costs about three
times as much (bench/RESULTS.md, fourth run), so this is the number to shrink.

    .venv/bin/python bench/check_warm.py                 # µs per Check, 3 runs
    .venv/bin/python bench/check_warm.py --profile       # plus a cProfile of one run
    .venv/bin/python bench/check_warm.py --quota batched # with an embedded-store quota

Times on a shared VM move by a factor of two from day to day; bench/check_instructions.py
counts the instructions of the same loop instead, which repeat to within about 1 %.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from check_bench import cached_body, quota_yaml, write_config
from tenantgate.authz import AuthorizationServicer, parse_check_request
from tenantgate.config.load import load_config
from tenantgate.runtime import Runtime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checks", type=int, default=50_000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--quota", choices=["none", "exact", "batched"], default="none",
                        help="a plan far above the load on the embedded store, in this mode")
    parser.add_argument("--workdir", type=Path, metavar="DIR",
                        help="reuse the keys in DIR (made there if missing) instead of a new "
                             "temporary directory: key generation varies from run to run")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="tg-warm-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        run(args, work)
    finally:
        if args.workdir is None:  # ours to remove; a --workdir is kept for the next run
            shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path) -> None:
    quota = quota_yaml("memory", args.quota) if args.quota != "none" else ""
    config = write_config(work, 1, 2, name="warm", quota=quota)  # ports unused: no listener
    os.chdir(work)  # the audit log path is relative
    parsed = parse_check_request(cached_body(work))  # as gRPC hands it to the servicer
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    runtime = Runtime.build(load_config(config))
    loop.run_until_complete(runtime.start())
    servicer = AuthorizationServicer(lambda: runtime)

    def check() -> bytes:
        # A cached Check never suspends: one send() runs it to the end.
        # No gRPC context: a cached Check uses none.
        coroutine = servicer.check_parsed(parsed, None)  # type: ignore[arg-type]
        try:
            coroutine.send(None)
        except StopIteration as done:
            return bytes(done.value)
        raise RuntimeError("the Check suspended: the token was not cached")

    check()  # verifies the token and fills the cache and the allow template
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(args.checks):
            check()
        print(f"{(time.perf_counter() - started) / args.checks * 1e6:.1f} µs per Check")
    if args.profile:
        profile = cProfile.Profile()
        profile.runcall(lambda: [check() for _ in range(args.checks)])
        pstats.Stats(profile).sort_stats("tottime").print_stats(20)
    loop.run_until_complete(runtime.close())


if __name__ == "__main__":
    main()
