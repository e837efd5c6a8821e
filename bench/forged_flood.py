"""A flood of forged bearer tokens, a new one every request, from one client address, while an
honest client on another address (127.0.0.2) makes requests one at a time: what the honest
client sees, and how many forgeries tenantgate verifies, with and without
`envoy-config --client-limit` (front mode; real Envoy and tenantgate on loopback).

  alone   the honest client only (Envoy without the limit)
  flood   the honest client, and wrk -c16 sending forgeries (Envoy without the limit)
  limited the same flood through an Envoy rendered with --client-limit

Interleaved rounds, medians. Needs wrk (apt-get install -y wrk).

  .venv/bin/python bench/forged_flood.py                     # 3 rounds of 10 s runs
  .venv/bin/python bench/forged_flood.py --rounds 1 --seconds 2 --output /tmp/smoke.md
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import yaml
from envoy_bench import (
    AUDIENCE,
    ISSUER,
    PATH,
    denials,
    machine,
    signing_setup,
    with_direct_response,
)
from harness import cpu_seconds
from tenantgate.config.envoy import EnvoyOptions, bootstrap_dict
from tenantgate.config.load import load_config
from tenantgate.config.quota import parse_rate
from tenantgate.testing.binaries import free_port
from tenantgate.testing.envoy import EnvoyProcess, TenantgateProcess

HERE = Path(__file__).resolve().parent
SCENARIOS = ("alone", "flood", "limited")
HONEST_ADDRESS = "127.0.0.2"  # all of 127/8 is this host's loopback; wrk comes from 127.0.0.1
HONEST_RATE = 50  # requests per second
# A new signature on every request, under the real token's header and claims: each one is a
# rejected-token cache miss, and a full ES256 verification that fails.
FORGER = """
local prefix = "Bearer %s."
local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
math.randomseed(os.time())
request = function()
  local signature = {}
  for i = 1, 85 do
    local k = math.random(1, 64)
    signature[i] = alphabet:sub(k, k)
  end
  -- 64 bytes are 86 characters; the last carries 2 bits and four zero bits (canonical form)
  local last = 16 * math.random(0, 3) + 1
  signature[86] = alphabet:sub(last, last)
  return wrk.format("GET", nil, {["authorization"] = prefix .. table.concat(signature)})
end
"""


@dataclass
class Run:
    honest_ms: list[float] = field(default_factory=list)
    honest_status: Counter[int] = field(default_factory=Counter)
    flood_rps: float = 0.0
    verified_per_s: float = 0.0  # forgeries that reached tenantgate and were verified
    sidecar_cpu: float = 0.0  # share of one core tenantgate used
    reasons: Counter[str] = field(default_factory=Counter)  # tenantgate's denials meanwhile

    def honest(self, q: float) -> float:
        data = sorted(self.honest_ms)
        return data[min(len(data) - 1, int(q * len(data)))] if data else float("nan")


def honest_client(url: str, token: str, stop: threading.Event, run: Run) -> None:
    """HONEST_RATE requests a second, each waiting for the last: under any sane client limit."""
    transport = httpx.HTTPTransport(local_address=HONEST_ADDRESS)
    headers = {"authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, transport=transport, timeout=10) as client:
        next_at = time.perf_counter()
        while not stop.is_set():
            started = time.perf_counter()
            status = client.get(PATH, headers=headers).status_code
            run.honest_ms.append((time.perf_counter() - started) * 1000)
            run.honest_status[status] += 1
            next_at = max(next_at + 1 / HONEST_RATE, time.perf_counter())
            stop.wait(next_at - time.perf_counter())


def flood(url: str, script: Path, seconds: float) -> float:
    out = subprocess.run(["wrk", "-t1", "-c16", f"-d{max(1, round(seconds))}s", "-s",
                          str(script), url + PATH], capture_output=True, text=True,
                         timeout=seconds + 60).stdout
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if found is None:
        raise RuntimeError(f"wrk failed:\n{out}")
    return float(found.group(1))


def measure(url: str, token: str, seconds: float, script: Path | None, gate: psutil.Process,
            audit_log: Path) -> Run:
    run, stop = Run(), threading.Event()
    before_checks, before_cpu = denials(audit_log), cpu_seconds(gate)
    started = time.monotonic()
    honest = threading.Thread(target=honest_client, args=(url, token, stop, run))
    honest.start()
    try:
        if script is not None:
            run.flood_rps = flood(url, script, seconds)
        else:
            time.sleep(seconds)
    finally:
        stop.set()
        honest.join()
    elapsed = time.monotonic() - started
    refused = denials(audit_log) - before_checks
    run.reasons = refused
    run.verified_per_s = refused["bad_signature"] / elapsed
    run.sidecar_cpu = (cpu_seconds(gate) - before_cpu) / elapsed
    return run


def tenantgate_config(work: Path, grpc: str) -> Path:
    (work / "ctx.key").write_text(secrets.token_hex(32))
    config = {
        "listen": {"grpc": grpc, "metrics": None},
        "issuers": [{"name": "bench", "issuer": ISSUER, "audiences": [AUDIENCE],
                     "jwks": {"file": str(work / "jwks.json")},
                     "tenant_pattern": "^[a-z0-9-]{1,63}$"}],
        "policy": {"routes": [{"path": "/tenants/{tenant}/**"}]},
        "context": {"active_key": "k1", "keys": [{"id": "k1", "secret": {"fromFile": "ctx.key"}}]},
        # Every forgery is counted here; the default line cap would hide most of them.
        "audit": {"enabled": True, "path": str(work / "audit.log"), "sample_allow": 0.0,
                  "max_lines_per_second": 0},
    }
    path = work / "tenantgate.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def envoy(config: Path, grpc: str, client_limit: str | None) -> tuple[EnvoyProcess, str]:
    listen = f"127.0.0.1:{free_port()}"
    options = EnvoyOptions(mode="front", listen=listen, upstream="127.0.0.1:1",
                           admin=f"127.0.0.1:{free_port()}", authz=grpc, rate_limit=False,
                           access_log=False,
                           client_limit=parse_rate(client_limit) if client_limit else None)
    bootstrap = with_direct_response(bootstrap_dict(load_config(config), options), None)
    # with_direct_response replaces the filters only when given some: both limit and
    # ext_authz stay, in the generator's order.
    return EnvoyProcess(bootstrap, concurrency=1, log_level="error"), f"http://{listen}"


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def report(runs: dict[str, list[Run]], args: argparse.Namespace, command: str) -> str:
    lines = [
        "# Forged-token flood",
        "",
        f"Machine: {machine()}.  ",
        f"Command: `{command}`  ",
        f"{args.rounds} interleaved rounds of {args.seconds:g} s per scenario, medians. The "
        f"flood: wrk -c16 from 127.0.0.1, a new forged ES256 token each request. The honest "
        f"client: {HONEST_RATE} requests a second, one at a time, from {HONEST_ADDRESS} with a "
        f"valid token (Python httpx). "
        f"Envoy --concurrency 1, front mode, direct response; `limited` is rendered with "
        f"`--client-limit {args.limit}`.",
        "",
        "| scenario | honest p50 ms | honest p99 ms | honest requests | honest non-200 | "
        "flood req/s | forgeries verified/s | tenantgate CPU (cores) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in SCENARIOS:
        rs = runs[name]
        non_200 = sum(sum(n for s, n in r.honest_status.items() if s != 200) for r in rs)
        lines.append(
            f"| {name} | {med([r.honest(0.5) for r in rs]):.2f} | "
            f"{med([r.honest(0.99) for r in rs]):.2f} | "
            f"{med([float(len(r.honest_ms)) for r in rs]):,.0f} | {non_200} | "
            f"{med([r.flood_rps for r in rs]):,.0f} | {med([r.verified_per_s for r in rs]):,.0f} | "
            f"{med([r.sidecar_cpu for r in rs]):.2f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--limit", default="100/s", help="--client-limit of `limited`")
    parser.add_argument("--output", default=str(HERE / "RESULTS-flood.md"))
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk not found: apt-get install -y wrk", file=sys.stderr)
        return 2
    command = " ".join(["python bench/forged_flood.py", *sys.argv[1:]])
    work = Path(tempfile.mkdtemp(prefix="tg-flood-bench-"))
    try:
        _, token = signing_setup(work)
        header, payload, _ = token.split(".")
        script = work / "forger.lua"
        script.write_text(FORGER % f"{header}.{payload}")
        grpc = f"127.0.0.1:{free_port()}"
        config = tenantgate_config(work, grpc)
        runs: dict[str, list[Run]] = {name: [] for name in SCENARIOS}
        with contextlib.ExitStack() as stack:
            gate = stack.enter_context(TenantgateProcess(config, grpc=grpc))
            assert gate.proc is not None
            gate_process = psutil.Process(gate.proc.pid)
            open_envoy, open_url = envoy(config, grpc, None)
            limited_envoy, limited_url = envoy(config, grpc, args.limit)
            stack.enter_context(open_envoy)
            stack.enter_context(limited_envoy)
            plan = {"alone": (open_url, None), "flood": (open_url, script),
                    "limited": (limited_url, script)}
            for round_no in range(args.rounds):
                for name in SCENARIOS:
                    url, flood_script = plan[name]
                    run = measure(url, token, args.seconds, flood_script, gate_process,
                                  work / "audit.log")
                    runs[name].append(run)
                    print(f"round {round_no + 1} {name:8} honest p50 {run.honest(0.5):.2f} ms "
                          f"p99 {run.honest(0.99):.2f} ms  statuses "
                          f"{json.dumps(dict(run.honest_status))}  flood {run.flood_rps:,.0f} "
                          f"req/s  verified {run.verified_per_s:,.0f}/s  "
                          f"{dict(run.reasons)}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = report(runs, args, command)
    Path(args.output).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
