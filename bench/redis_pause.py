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
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

from envoy_bench import AUDIENCE, ISSUER, KEY_ID, TENANT, denials, envoy_for, tenantgate_config, wrk
from tenantgate.config.envoy import EnvoyOptions, bootstrap_dict
from tenantgate.config.load import load_config
from tenantgate.testing import tokens
from tenantgate.testing.envoy import EnvoyProcess, TenantgateProcess
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
    key = tokens.generate_key("ES256")
    jwk = tokens.public_jwk(key, KEY_ID, "ES256")
    (work / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    token = tokens.mint(key, "ES256", tokens.claims(ISSUER, AUDIENCE, TENANT, ttl=7200),
                        kid=KEY_ID)
    modes = ("exact", "batched")
    with contextlib.ExitStack() as stack:
        redis = stack.enter_context(RedisServer())
        assert redis.pid is not None
        envoys: dict[str, EnvoyProcess] = {}
        for mode in modes:
            (work / mode).mkdir()
            config = tenantgate_config(work / mode, mode, redis.url)
            stack.enter_context(TenantgateProcess(config, uds=str(work / mode / "authz.sock")))
            base = bootstrap_dict(load_config(config), EnvoyOptions(
                mode="sidecar", upstream="127.0.0.1:1", rate_limit=False, access_log=False))
            envoys[mode] = stack.enter_context(envoy_for(mode, base, jwk, None))
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
