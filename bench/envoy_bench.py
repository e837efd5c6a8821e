"""Benchmark the whole Envoy path with wrk on 127.0.0.1, in interleaved rounds:

  floor     Envoy alone, direct response
  native    Envoy jwt_authn + local_ratelimit (the strongest peer), direct response
  exact     Envoy + tenantgate (JWT, Redis quota `exact`, signed context, audit + metrics on)
  batched   the same with the quota in `batched` mode
  noop      Envoy + a no-op grpc.aio ext_authz server (the ceiling of any Python sidecar)

Every scenario answers with the same direct response, so differences are the filters' cost.
Each Envoy runs with --concurrency 1 (on 2 cores, Envoy, wrk and the sidecar share the CPU).

  .venv/bin/python bench/envoy_bench.py                      # 3 rounds, 10 s / 5 s runs
  .venv/bin/python bench/envoy_bench.py --rounds 1 --seconds 1 --output /tmp/smoke.md
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import yaml
from harness import cpu_seconds
from tenantgate.config.envoy import EnvoyOptions, bootstrap_dict
from tenantgate.config.load import load_config
from tenantgate.testing import tokens
from tenantgate.testing.binaries import free_port
from tenantgate.testing.envoy import EnvoyProcess, ManagedProcess, TenantgateProcess
from tenantgate.testing.redis import RedisServer

HERE = Path(__file__).resolve().parent
ISSUER, AUDIENCE, KEY_ID, TENANT = "https://bench.local/", "bench", "bench-1", "acme"
PATH = f"/tenants/{TENANT}/items"
SCENARIOS = ("floor", "native", "exact", "batched", "noop")
ROUTER = {"name": "envoy.filters.http.router", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}


@dataclass
class Run:
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    # CPU time per request (µs) of the sidecar and of Envoy during the run; NaN where unknown
    sidecar_us: float = float("nan")
    envoy_us: float = float("nan")


@dataclass
class Results:
    c32: dict[str, list[Run]] = field(default_factory=lambda: {s: [] for s in SCENARIOS})
    c1: dict[str, list[Run]] = field(default_factory=lambda: {s: [] for s in SCENARIOS})
    denials: dict[str, Counter[str]] = field(default_factory=dict)  # per tenantgate scenario
    # Stalls, per (round, scenario) that had one: the bystander's longest pause (ms) and the
    # sidecar's loop-lag samples of 0.1 s or more
    stalls: list[str] = field(default_factory=list)
    # Envoy's own counts of what went wrong at ext_authz (a Check that timed out is no denial
    # in tenantgate's audit log), per sidecar scenario
    envoy_errors: dict[str, dict[str, int]] = field(default_factory=dict)


class NoopAuthz(ManagedProcess):
    """bench/noop_authz.py on a Unix socket, like tenantgate in sidecar mode."""

    name = "noop-authz"

    def start(self, socket_path: Path) -> NoopAuthz:
        self._launch([sys.executable, str(HERE / "noop_authz.py"), "--listen",
                      f"unix:{socket_path}"], socket_path.is_socket, 20)
        return self


def tenantgate_config(directory: Path, mode: str, redis_url: str) -> Path:
    (directory / "ctx.key").write_text(secrets.token_hex(32))
    config = {
        "listen": {"grpc": None, "uds": str(directory / "authz.sock"),
                   "metrics": f"127.0.0.1:{free_port()}"},
        "issuers": [{"name": "bench", "issuer": ISSUER, "audiences": [AUDIENCE],
                     "jwks": {"file": str(directory.parent / "jwks.json")},
                     "tenant_pattern": "^[a-z0-9-]{1,63}$"}],
        "tenants": {"registry": {TENANT: {"plan": "bench"}}},
        "policy": {"routes": [{"path": "/tenants/{tenant}/**"}]},
        "context": {"active_key": "k1", "keys": [{"id": "k1", "secret": {"fromFile": "ctx.key"}}]},
        # Far above what the bench reaches: every request is admitted, and counted in Redis.
        "quota": {"enabled": True, "store": "redis", "redis": {"url": redis_url},
                  "plans": {"bench": {"limits": ["100000000/min"], "mode": mode}}},
        "audit": {"enabled": True, "path": str(directory / "audit.log")},
    }
    path = directory / "tenantgate.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def with_direct_response(bootstrap: dict[str, Any], filters: list[dict[str, Any]] | None
                         ) -> dict[str, Any]:
    """The same listener, answering 200 itself; `filters` replaces the HTTP filters."""
    manager = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"]
    route = manager["route_config"]["virtual_hosts"][0]["routes"][0]
    route.pop("route")
    route["direct_response"] = {"status": 200, "body": {"inline_string": "ok\n"}}
    if filters is not None:
        manager["http_filters"] = [*filters, ROUTER]
    return bootstrap


def native_filters(jwk: dict[str, Any]) -> list[dict[str, Any]]:
    jwt = {"name": "envoy.filters.http.jwt_authn", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3."
                 "JwtAuthentication",
        "providers": {"bench": {
            "issuer": ISSUER, "audiences": [AUDIENCE], "forward": True,
            "local_jwks": {"inline_string": json.dumps({"keys": [jwk]})},
            "claim_to_headers": [{"header_name": "x-tenant-id", "claim_name": "tenant_id"}]}},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "bench"}}]}}
    percent = {"numerator": 100, "denominator": "HUNDRED"}
    limit = {"name": "envoy.filters.http.local_ratelimit", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3."
                 "LocalRateLimit",
        "stat_prefix": "bench",
        "token_bucket": {"max_tokens": 100000000, "tokens_per_fill": 100000000,
                         "fill_interval": "1s"},
        "filter_enabled": {"runtime_key": "rl_enabled", "default_value": percent},
        "filter_enforced": {"runtime_key": "rl_enforced", "default_value": percent}}}
    return [jwt, limit]


def envoy_for(scenario: str, base: dict[str, Any], jwk: dict[str, Any],
              authz_socket: Path | None) -> EnvoyProcess:
    bootstrap = json.loads(json.dumps(base))  # a deep copy
    port = free_port()
    bootstrap["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] = port
    bootstrap["admin"]["address"]["socket_address"]["port_value"] = free_port()
    filters = {"floor": [], "native": native_filters(jwk)}.get(scenario)
    with_direct_response(bootstrap, filters)
    if authz_socket is not None:
        cluster = next(c for c in bootstrap["static_resources"]["clusters"]
                       if c["name"] == "tenantgate")
        endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        endpoint["address"] = {"pipe": {"path": str(authz_socket)}}
    envoy = EnvoyProcess(bootstrap, concurrency=1, log_level="error")
    envoy.port = port  # type: ignore[attr-defined]
    return envoy


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk(port: int, token: str, seconds: float, connections: int) -> Run:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
         "-H", f"authorization: Bearer {token}", f"http://127.0.0.1:{port}{PATH}"],
        capture_output=True, text=True, timeout=seconds + 60).stdout

    def latency(pct: str) -> float:
        m = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
        return float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*?timeout (\d+)", out)
    if rps is None:
        raise RuntimeError(f"wrk failed:\n{out}")
    failed = (int(non_2xx.group(1)) if non_2xx else 0) + (int(errors.group(1)) if errors else 0)
    return Run(float(rps.group(1)), latency("50"), latency("99"), failed)


def signing_setup(work: Path) -> tuple[dict[str, Any], str]:
    """The issuer's JWKS file in `work`, its public key, and one token for tenant TENANT."""
    key = tokens.generate_key("ES256")
    jwk = tokens.public_jwk(key, KEY_ID, "ES256")
    (work / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    token = tokens.mint(key, "ES256", tokens.claims(ISSUER, AUDIENCE, TENANT, ttl=7200),
                        kid=KEY_ID)
    return jwk, token


def tenantgate_behind_envoy(stack: contextlib.ExitStack, work: Path, mode: str, redis_url: str,
                            jwk: dict[str, Any]
                            ) -> tuple[TenantgateProcess, EnvoyProcess, dict[str, Any]]:
    """A running tenantgate with its quota in `mode`, the (unstarted) Envoy in front of it,
    and the generated bootstrap the other scenarios start from."""
    (work / mode).mkdir()
    config = tenantgate_config(work / mode, mode, redis_url)
    sidecar = stack.enter_context(TenantgateProcess(config, uds=str(work / mode / "authz.sock")))
    base = bootstrap_dict(load_config(config), EnvoyOptions(
        mode="sidecar", upstream="127.0.0.1:1", rate_limit=False, access_log=False))
    return sidecar, envoy_for(mode, base, jwk, None), base


def pin_threads(sidecar: ManagedProcess, cpu: int) -> None:
    """Every thread the sidecar has now on `cpu` (threads started later inherit it)."""
    assert sidecar.proc is not None
    for tid in os.listdir(f"/proc/{sidecar.proc.pid}/task"):
        with contextlib.suppress(ProcessLookupError):  # a thread that just ended
            os.sched_setaffinity(int(tid), {cpu})


def measured(port: int, token: str, seconds: float, connections: int,
             sidecar: ManagedProcess | None, envoy: EnvoyProcess) -> Run:
    """wrk, and how much CPU the sidecar and Envoy spent per request meanwhile."""
    procs = [psutil.Process(p.proc.pid) for p in (sidecar, envoy)
             if p is not None and p.proc is not None]
    before = [cpu_seconds(proc) for proc in procs]
    run = wrk(port, token, seconds, connections)
    requests = run.rps * seconds
    spent = [(cpu_seconds(proc) - b) * 1e6 / requests
             for proc, b in zip(procs, before, strict=True)]
    if sidecar is not None:
        run.sidecar_us = spent.pop(0)
    run.envoy_us = spent[0]
    return run


class PauseWatch:
    """A bystander thread that sleeps 10 ms at a time and keeps its longest oversleep: a pause
    of the whole machine (the host took the vCPUs) shows here, a stall of one process does
    not. Together with the sidecar's own loop lag it says where a burst of timeouts came from."""

    SLEEP = 0.01

    def __init__(self) -> None:
        self._longest = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            start = time.monotonic()
            time.sleep(self.SLEEP)
            self._longest = max(self._longest, time.monotonic() - start - self.SLEEP)

    def take_ms(self) -> float:
        """The longest pause since the last call, in ms."""
        longest, self._longest = self._longest, 0.0
        return longest * 1000

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def loop_stalls(metrics_address: str) -> int:
    """How many of the sidecar's loop-lag samples so far were over 0.1 s."""
    text = urllib.request.urlopen(f"http://{metrics_address}/metrics", timeout=5).read().decode()
    name = "tenantgate_event_loop_lag_seconds"
    total = re.search(rf"^{name}_count (\S+)$", text, re.MULTILINE)
    within = re.search(rf'^{name}_bucket{{le="0\.1"}} (\S+)$', text, re.MULTILINE)
    if total is None or within is None:
        raise RuntimeError(f"{name} missing from the sidecar's metrics")
    return int(float(total.group(1)) - float(within.group(1)))


def denials(audit_log: Path) -> Counter[str]:
    """Deny reasons in a tenantgate audit log (every denial is logged, up to the line cap)."""
    lines = (json.loads(line) for line in audit_log.read_text().splitlines())
    return Counter(d["reason"] for d in lines if d.get("decision") == "deny")


# Envoy counters that explain a non-2xx the audit log does not: ext_authz errors (a Check
# past --authz-timeout, a sidecar that refused the stream) and the responses they became.
_ENVOY_ERROR_STATS = ("http.ingress.ext_authz.error", "http.ingress.ext_authz.denied",
                      "http.ingress.ext_authz.invalid",
                      "http.ingress.ext_authz.failure_mode_allowed",
                      "cluster.tenantgate.upstream_rq_timeout",
                      "http.ingress.downstream_rq_4xx", "http.ingress.downstream_rq_5xx")


# And whatever else the sidecar's cluster counted going wrong: a reset or closed connection
# fails every Check in flight on it at once, as a stall past the timeout does.
_CLUSTER_TROUBLE = re.compile(r"^cluster\.tenantgate\.upstream_(?:cx|rq)_\w*(?:rx_reset|destroy_\w*"
                              r"|protocol_error|overflow|fail\w*|close_notify)$")


def envoy_errors(envoy: EnvoyProcess) -> dict[str, int]:
    stats = envoy.stats()
    names = [*_ENVOY_ERROR_STATS, *sorted(n for n in stats if _CLUSTER_TROUBLE.match(n))]
    return {name.rpartition(".")[2]: stats[name] for name in names if stats.get(name)}


def med(runs: list[Run], attr: str) -> float:
    return statistics.median(getattr(r, attr) for r in runs) if runs else float("nan")


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    envoy = re.search(r"/(\d+\.\d+\.\d+)/", subprocess.run(
        [str(Path(sys.executable).parent / "envoy"), "--version"],
        capture_output=True, text=True).stdout)
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout
    return (f"{os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, Envoy {envoy.group(1) if envoy else '?'}, "
            f"{wrk_version.splitlines()[0].split(' [')[0] if wrk_version else 'wrk'}")


def report(results: Results, args: argparse.Namespace, command: str) -> str:
    floor32, native32 = results.c32["floor"], results.c32["native"]
    lines = [
        "# Envoy path benchmark", "",
        f"Machine: {machine()}.  ",
        f"Command: `{command}`  ",
        f"{args.rounds} interleaved rounds; per round and scenario wrk -t1 -c32 for "
        f"{args.seconds:g} s, then -c1 for {args.seconds / 2:g} s; medians over rounds. Every "
        "scenario answers with Envoy's direct response (no upstream), HTTP/1.1, one cached "
        "token. Envoy --concurrency 1; load generator, Envoy and the sidecar share the cores, "
        "so absolute numbers move with the machine: the ratios are the result.", "",
        "| scenario | req/s @32 | x floor | x native | p50 ms @32 | p99 ms @32 | p50 ms @1 "
        "| added p50 @1 vs floor | non-2xx |",
        "|---|---|---|---|---|---|---|---|---|"]
    for s in SCENARIOS:
        rps = med(results.c32[s], "rps")
        p50_1 = med(results.c1[s], "p50_ms")
        bad = sum(r.non_2xx for r in results.c32[s] + results.c1[s])
        lines.append(
            f"| {s} | {rps:,.0f} | {rps / med(floor32, 'rps'):.2f} | "
            f"{rps / med(native32, 'rps'):.2f} | {med(results.c32[s], 'p50_ms'):.2f} | "
            f"{med(results.c32[s], 'p99_ms'):.2f} | {p50_1:.3f} | "
            f"{p50_1 - med(results.c1['floor'], 'p50_ms'):+.3f} | {bad} |")
    lines += ["", "Latencies as ratios (medians; above 1: slower than the floor or the native "
              "peer):", "",
              "| scenario | p50 @32 x floor | x native | p99 @32 x floor | x native "
              "| p50 @1 x floor | x native |", "|---|---|---|---|---|---|---|"]
    for s in SCENARIOS:
        cells = []
        for runs, peers, attr in ((results.c32, (floor32, native32), "p50_ms"),
                                  (results.c32, (floor32, native32), "p99_ms"),
                                  (results.c1, (results.c1["floor"], results.c1["native"]),
                                   "p50_ms")):
            value = med(runs[s], attr)
            cells += [f"{value / med(peer, attr):.2f}" for peer in peers]
        lines.append(f"| {s} | {' | '.join(cells)} |")
    lines += ["", "CPU time per request at 32 connections (medians; µs, all threads, from "
              "/proc; Redis not included): the no-op row is what the gRPC call itself costs "
              "the sidecar and Envoy; the difference in the tenantgate rows comes with the "
              "handler's work.", "",
              "| scenario | sidecar µs/req | Envoy µs/req |", "|---|---|---|"]
    for s in SCENARIOS:
        sidecar = med(results.c32[s], "sidecar_us")
        lines.append(f"| {s} | {'-' if math.isnan(sidecar) else f'{sidecar:.0f}'} | "
                     f"{med(results.c32[s], 'envoy_us'):.0f} |")
    noop = med(results.c32["noop"], "rps")
    lines += ["", "Targets (issue 6):", ""]
    for mode, target in (("exact", 0.45), ("batched", 0.75)):
        ratio = med(results.c32[mode], "rps") / noop
        # Each round's own ratio too: on a noisy machine the two medians can come from
        # different rounds, and a slow no-op round then reads as a better ratio than any
        # round had. Met only when both are.
        rounds = [m.rps / n.rps for m, n in zip(results.c32[mode], results.c32["noop"],
                                                 strict=True)]
        per_round = statistics.median(rounds)
        lines.append(f"- full path ({mode}) / no-op ceiling: {ratio:.3f} as the ratio of the "
                     f"medians, {per_round:.3f} as the median of the rounds' ratios "
                     f"({', '.join(f'{r:.2f}' for r in rounds)}) (target ≥ {target}): "
                     f"{'met' if min(ratio, per_round) >= target else 'NOT met'}")
    for mode in ("exact", "batched"):
        added = med(results.c1[mode], "p50_ms") - med(results.c1["floor"], "p50_ms")
        lines.append(f"- added p50 at 1 connection ({mode}): {added:.3f} ms (target ≤ 0.8 ms): "
                     f"{'met' if added <= 0.8 else 'NOT met'}")
    bad = sum(r.non_2xx for m in ("exact", "batched") for r in results.c32[m] + results.c1[m])
    lines.append(f"- non-2xx responses for the tenant under its limit: {bad} (target 0)")
    said = "; ".join(f"{m}: {dict(c) or 'none'}" for m, c in results.denials.items())
    lines.append(f"- denials in tenantgate's audit logs, the reasons behind any non-2xx: {said}")
    said = "; ".join(f"{m}: {c or 'none'}" for m, c in results.envoy_errors.items())
    lines.append(f"- Envoy's ext_authz errors and error responses (whole run, warm-ups "
                 f"included): {said}")
    lines.append("- stalls (a bystander thread's pause of 100 ms or more, or sidecar "
                 "loop-lag samples over 0.1 s; either can outlast Envoy's 0.25 s ext_authz "
                 f"timeout): {'; '.join(results.stalls) or 'none'}")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0, help="per run at 32 connections")
    parser.add_argument("--output", default=str(HERE / "RESULTS-envoy.md"))
    parser.add_argument("--pin-sidecars", type=int, metavar="CPU",
                        help="an experiment: every thread of the no-op and tenantgate sidecars "
                             "on this CPU (Envoy, wrk and Redis left to the scheduler)")
    args = parser.parse_args()
    if args.pin_sidecars is not None and args.pin_sidecars not in os.sched_getaffinity(0):
        parser.error(f"--pin-sidecars: CPU {args.pin_sidecars} is not one this process may "
                     f"use ({sorted(os.sched_getaffinity(0))})")
    if shutil.which("wrk") is None:
        print("wrk not found: apt-get install -y wrk", file=sys.stderr)
        return 2
    command = "python bench/envoy_bench.py " + " ".join(sys.argv[1:])
    work = Path(tempfile.mkdtemp(prefix="tg-envoy-bench-"))
    jwk, token = signing_setup(work)
    results = Results()
    with contextlib.ExitStack() as stack:
        redis = stack.enter_context(RedisServer())
        envoys: dict[str, EnvoyProcess] = {}
        sidecars: dict[str, ManagedProcess] = {}
        for mode in ("exact", "batched"):
            sidecars[mode], envoys[mode], base = tenantgate_behind_envoy(
                stack, work, mode, redis.url, jwk)
        noop_socket = work / "noop.sock"
        noop = NoopAuthz()
        stack.callback(noop.close)
        noop.start(noop_socket)
        sidecars["noop"] = noop
        envoys["noop"] = envoy_for("noop", base, jwk, noop_socket)
        envoys["floor"] = envoy_for("floor", base, jwk, None)
        envoys["native"] = envoy_for("native", base, jwk, None)
        for name in SCENARIOS:
            stack.enter_context(envoys[name])
        metrics_at = {mode: yaml.safe_load((work / mode / "tenantgate.yaml").read_text())[
            "listen"]["metrics"] for mode in ("exact", "batched")}
        pauses = PauseWatch()
        stack.callback(pauses.close)
        for round_no in range(args.rounds):
            for name in SCENARIOS:
                if args.pin_sidecars is not None and name in sidecars:
                    pin_threads(sidecars[name], args.pin_sidecars)
                port = envoys[name].port  # type: ignore[attr-defined]
                wrk(port, token, 1, 8)  # warm-up: connections, token cache, JWKS
                stalls_before = loop_stalls(metrics_at[name]) if name in metrics_at else 0
                pauses.take_ms()
                results.c32[name].append(measured(port, token, args.seconds, 32,
                                                  sidecars.get(name), envoys[name]))
                results.c1[name].append(wrk(port, token, args.seconds / 2, 1))
                paused = pauses.take_ms()
                stalls = loop_stalls(metrics_at[name]) - stalls_before \
                    if name in metrics_at else 0
                r, one = results.c32[name][-1], results.c1[name][-1]
                if paused >= 100 or stalls:
                    results.stalls.append(f"round {round_no + 1} {name}: machine paused "
                                          f"{paused:.0f} ms, sidecar loop lagged over 0.1 s "
                                          f"{stalls} times")
                print(f"round {round_no + 1} {name:8} {r.rps:10,.0f} req/s  p50 {r.p50_ms:.2f} "
                      f"ms  p99 {r.p99_ms:.2f} ms  non-2xx {r.non_2xx} (at 1 connection "
                      f"{one.non_2xx})  longest pause {paused:.0f} ms  loop stalls {stalls}",
                      flush=True)
        results.envoy_errors = {s: envoy_errors(envoys[s]) for s in ("exact", "batched", "noop")}
    results.denials = {mode: denials(work / mode / "audit.log") for mode in ("exact", "batched")}
    shutil.rmtree(work, ignore_errors=True)
    text = report(results, args, command)
    Path(args.output).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
