"""Where a Check's time goes through Envoy: tenantgate with its handler swapped
(bench/handler_variants.py), each behind its own Envoy from the same generated bootstrap, and
the no-op server, in interleaved wrk rounds at one connection (and optionally 32).

  .venv/bin/python bench/one_connection.py                       # noop,const,replay,full
  .venv/bin/python bench/one_connection.py --variants noop,full,fastlane --rounds 20 --seconds 2
  .venv/bin/python bench/one_connection.py --variants full,no-quota,no-observe --c32-seconds 8
  .venv/bin/python bench/one_connection.py --variants noop,timed   # plus the handler's parts
  .venv/bin/python bench/one_connection.py --variants noop,timed,exact-timed --rounds 3 --seconds 3

Medians over rounds, and each variant's median per-round difference from the first one: on a
shared VM the speed drifts between rounds, and the per-round difference cancels the drift. At
32 connections the sidecar's CPU per request is also split by thread: the event loop's (where
the handler runs), gRPC core's event engine threads, and the others (gRPC's poller).
The quota is `batched` on a throwaway redis-server (`exact` for the exact variants). For
measurement only (see the variants).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from envoy_bench import (
    HERE,
    NoopAuthz,
    envoy_for,
    measured,
    signing_setup,
    tenantgate_config,
    wrk,
)
from handler_variants import VARIANTS
from harness import thread_cpu_seconds
from tenantgate.config.envoy import EnvoyOptions, bootstrap_dict
from tenantgate.config.load import load_config
from tenantgate.testing.envoy import EnvoyProcess, ManagedProcess, TenantgateProcess
from tenantgate.testing.redis import RedisServer


class VariantProcess(TenantgateProcess):
    """tenantgate serve through bench/handler_variants.py."""

    def __init__(self, config: Path, uds: Path, variant: str, timings: Path) -> None:
        super().__init__(config, uds=str(uds), env={"TG_TIMINGS": str(timings)})
        self.variant = variant

    def start(self, timeout: float = 30.0) -> VariantProcess:
        self._launch([sys.executable, str(HERE / "handler_variants.py"), self.variant, "serve",
                      "--config", self.config_path, "--log-level", "WARNING"], self._ready,
                     timeout, env=self.env)
        return self


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="noop,const,replay,full",
                        help=f"comma-separated: noop and any of {', '.join(VARIANTS)}")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0, help="per run at 1 connection")
    parser.add_argument("--c32-seconds", type=float, default=0.0,
                        help="also run 32 connections this long per round (0: not)")
    args = parser.parse_args()
    names = args.variants.split(",")
    unknown = [n for n in names if n != "noop" and n not in VARIANTS]
    if unknown or len(set(names)) != len(names):
        parser.error(f"--variants: unknown or repeated: {', '.join(unknown) or args.variants}")
    if shutil.which("wrk") is None:
        print("wrk not found: apt-get install -y wrk", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="tg-one-connection-"))
    try:
        run(args, names, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def run(args: argparse.Namespace, names: list[str], work: Path) -> None:
    jwk, token = signing_setup(work)
    p50: dict[str, list[float]] = {n: [] for n in names}
    c32: dict[str, list[tuple[float, float, float]]] = {n: [] for n in names}
    threads: dict[str, list[dict[str, float]]] = {n: [] for n in names}  # µs/req by group
    with contextlib.ExitStack() as stack:
        redis = stack.enter_context(RedisServer())
        sidecars: dict[str, ManagedProcess] = {}
        sockets: dict[str, Path] = {}
        config = None
        for name in names:
            (work / name).mkdir()
            sockets[name] = work / name / "authz.sock"
            if name == "noop":
                noop = NoopAuthz()
                stack.callback(noop.close)
                sidecars[name] = noop.start(sockets[name])
                continue
            mode = "exact" if name.startswith("exact") else "batched"
            config = tenantgate_config(work / name, mode, redis.url)
            sidecars[name] = stack.enter_context(
                VariantProcess(config, sockets[name], name, work / name / "timings.json"))
        if config is None:
            config = tenantgate_config(work, "batched", redis.url)  # only for the bootstrap
        base = bootstrap_dict(load_config(config), EnvoyOptions(
            mode="sidecar", upstream="127.0.0.1:1", rate_limit=False, access_log=False))
        envoys: dict[str, EnvoyProcess] = {}
        for name in names:
            envoys[name] = stack.enter_context(envoy_for(name, base, jwk, sockets[name]))
        for round_no in range(args.rounds):
            for name in names:
                port = envoys[name].port  # type: ignore[attr-defined]
                wrk(port, token, 1, 8)  # warm-up: connections, token cache
                one = wrk(port, token, args.seconds, 1)
                p50[name].append(one.p50_ms)
                line = f"round {round_no + 1} {name:10} p50 @1 {one.p50_ms:.3f} ms"
                if args.c32_seconds:
                    pid = sidecars[name].proc.pid  # type: ignore[union-attr]
                    before = thread_cpu_seconds(pid)
                    r = measured(port, token, args.c32_seconds, 32, sidecars[name], envoys[name])
                    after = thread_cpu_seconds(pid)
                    requests = r.rps * args.c32_seconds
                    threads[name].append({g: (after[g] - before[g]) * 1e6 / requests
                                          for g in after})
                    c32[name].append((r.rps, r.sidecar_us, r.envoy_us))
                    line += (f"  @32 {r.rps:,.0f} req/s, sidecar {r.sidecar_us:.0f} µs/req, "
                             f"Envoy {r.envoy_us:.0f} µs/req")
                print(line, flush=True)
    first = names[0]
    print(f"\nmedians over {args.rounds} rounds; 'vs {first}': median per-round difference")
    for name in names:
        drift_free = [a - b for a, b in zip(p50[name], p50[first], strict=True)]
        line = (f"{name:10} p50 @1 {statistics.median(p50[name]):.3f} ms, vs {first} "
                f"{statistics.median(drift_free) * 1000:+.0f} µs")
        if c32[name]:
            rps, sidecar, envoy = (statistics.median(r[i] for r in c32[name]) for i in range(3))
            line += f"; @32 {rps:,.0f} req/s, sidecar {sidecar:.0f}, Envoy {envoy:.0f} µs/req"
            line += " (sidecar threads: " + ", ".join(
                f"{group} {statistics.median(t[group] for t in threads[name]):.0f}"
                for group in threads[name][0]) + ")"
        print(line)
        timings = work / name / "timings.json"
        if timings.exists():  # written by the `timed` variant when its server stopped
            parts = json.loads(timings.read_text())
            print("  handler parts, median µs: " + ", ".join(
                f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in parts.items()))


if __name__ == "__main__":
    sys.exit(main())
