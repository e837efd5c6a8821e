"""Benchmark of tenantgate's Check against the Python gRPC floor (a no-op grpc.aio handler).

Interleaved rounds in one run, on loopback, each bounded in time:
  floor-h2load       no-op Check server, one fixed request (h2load)
  cached             tenantgate, one valid token (verified once, then from the token cache)
  floor-pyload       no-op Check server, every request different (Python load generator)
  uncached           tenantgate, every request carries a new valid token (full verification)
then a flood of unique valid tokens and the server's RSS against the token-cache bound.

    python bench/check_bench.py --rounds 3 --seconds 5 --flood 200000
"""

from __future__ import annotations

import argparse
import base64
import json
import multiprocessing as mp
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

import psutil
from envoy.service.auth.v3 import attribute_context_pb2 as attrs
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest

sys.path.insert(0, str(Path(__file__).parent))
import grpc_load
from harness import BIN, LoadResult, cpu_seconds, free_port, h2load, median, process
from tenantgate.testing import tokens

ISSUER, AUDIENCE = "https://bench.local", "api"
# RS256 is what most identity providers sign with; the flood uses ES256 only because minting
# 200k RSA signatures would take minutes (the RSS test does not depend on the algorithm).
SIGNERS = {"RS256": "bench-rs", "ES256": "bench-es"}


def check_request(token: str, tenant: str = "acme") -> bytes:
    http = attrs.AttributeContext.HttpRequest(
        id="bench", method="GET", path=f"/tenants/{tenant}/notes", host="api.local",
        headers={"authorization": f"Bearer {token}", "x-request-id": "bench",
                 "user-agent": "bench", ":authority": "api.local"})
    request = CheckRequest(attributes=attrs.AttributeContext(
        request=attrs.AttributeContext.Request(http=http)))
    return request.SerializeToString()


def _mint_chunk(args: tuple[bytes, str, int, int]) -> list[str]:
    pem, alg, start, count = args
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(pem, password=None)
    out = []
    for i in range(start, start + count):
        claims = tokens.claims(ISSUER, AUDIENCE, "acme", subject=f"user-{i}", ttl=3600)
        out.append(check_request(tokens.mint(key, alg, claims, kid=SIGNERS[alg])).hex())
    return out


def write_unique_bodies(pem: bytes, alg: str, count: int, path: Path, offset: int) -> None:
    chunk = 2000
    jobs = [(pem, alg, offset + s, min(chunk, count - s)) for s in range(0, count, chunk)]
    with mp.Pool(os.cpu_count() or 1) as pool, path.open("w") as out:
        for lines in pool.imap(_mint_chunk, jobs):
            out.write("\n".join(lines) + "\n")


def write_keys(workdir: Path) -> None:
    jwks = []
    for alg, kid in SIGNERS.items():
        key = tokens.generate_key(alg)
        tokens.save_key(key, workdir / f"{alg}.pem")
        jwks.append(tokens.public_jwk(key, kid, alg))
    (workdir / "jwks.json").write_text(json.dumps({"keys": jwks}))
    (workdir / "ctx.key").write_text(base64.b64encode(os.urandom(48)).decode())


def write_config(workdir: Path, grpc_port: int, metrics_port: int, cache_entries: int = 50_000,
                 cache_bytes: str = "64MiB", quota: str = "", name: str = "tenantgate") -> Path:
    if not (workdir / "jwks.json").exists():
        write_keys(workdir)
    config = workdir / f"{name}.yaml"
    config.write_text(f"""\
listen: {{grpc: "127.0.0.1:{grpc_port}", metrics: "127.0.0.1:{metrics_port}"}}
issuers:
  - {{name: bench, issuer: "{ISSUER}", audiences: [{AUDIENCE}], jwks: {{file: jwks.json}},
      algorithms: [{", ".join(SIGNERS)}], tenant_pattern: "^[a-z0-9_-]{{1,63}}$"}}
credentials: {{token_cache_entries: {cache_entries}, token_cache_bytes: {cache_bytes}}}
tenants: {{registry: {{acme: {{plan: standard}}}}}}
policy: {{routes: [{{path: "/tenants/{{tenant}}/**"}}]}}
context: {{active_key: k1, keys: [{{id: k1, secret: {{fromFile: ctx.key}}}}]}}
audit: {{path: {name}-audit.log, sample_allow: 0.01}}
{quota}""")
    return config


def quota_yaml(store: str, mode: str, redis_url: str = "") -> str:
    """A plan far above the offered load: the benchmark measures the cost of admitting."""
    redis = f"  redis: {{url: '{redis_url}'}}\n" if store == "redis" else ""
    return (f"quota:\n  enabled: true\n  store: {store}\n{redis}"
            f"  default_plan: standard\n  plans:\n    standard:\n"
            f"      limits: ['10000000/s']\n      mode: {mode}\n")


def pyload(port: int, bodies: Path, seconds: float, server: psutil.Process,
           processes: int, concurrency: int) -> LoadResult:
    before = cpu_seconds(server)
    result = grpc_load.run(f"127.0.0.1:{port}", str(bodies), processes, concurrency, seconds)
    return LoadResult(int(result["completed"]), float(result["seconds"]),  # type: ignore[arg-type]
                      result["latencies_us"], cpu_seconds(server) - before,  # type: ignore[arg-type]
                      float("nan"), errors=int(result["errors"]))  # type: ignore[arg-type]


def summarize(name: str, runs: list[LoadResult]) -> dict[str, float]:
    return {"name": name,  # type: ignore[dict-item]
            "rate": median([r.rate for r in runs]),
            "p50_us": median([r.percentile(0.50) for r in runs]),
            "p99_us": median([r.percentile(0.99) for r in runs]),
            "server_cpu_us": median([r.server_cpu_us_per_call for r in runs]),
            "loadgen_cpu_share": median([r.loadgen_cpu_s / r.seconds for r in runs]),
            "errors": sum(r.errors for r in runs)}


def core_suite(args: argparse.Namespace, work: Path) -> dict[str, object]:
    """Cached and uncached Check against the no-op floor, then the token flood and RSS."""
    tg_port, noop_port, metrics_port = free_port(), free_port(), free_port()
    config = write_config(work, tg_port, metrics_port, args.cache_entries, args.cache_bytes)
    rs_pem, es_pem = (work / "RS256.pem").read_bytes(), (work / "ES256.pem").read_bytes()
    per_round = int(args.seconds * 4000)
    print(f"minting {per_round * args.rounds + args.flood} unique tokens ...", flush=True)
    rounds_files = [work / f"uncached-{r}.hex" for r in range(args.rounds)]
    for r, path in enumerate(rounds_files):  # tokens unique across rounds: the cache persists
        write_unique_bodies(rs_pem, "RS256", per_round, path, r * per_round)
    flood = work / "flood.hex"
    write_unique_bodies(es_pem, "ES256", args.flood, flood, 10_000_000)
    noop_bodies = rounds_files[0]  # the floor ignores tokens; any round's requests will do
    body = cached_body(work)
    results: dict[str, list[LoadResult]] = {k: [] for k in
                                            ("floor-h2load", "cached", "floor-pyload", "uncached")}
    with process(tenantgate_cmd(config), tg_port, work / "tenantgate.log") as tg, \
            process(noop_cmd(noop_port), noop_port, work / "noop.log") as noop:
        for r in range(args.rounds):
            print(f"round {r + 1}/{args.rounds}", flush=True)
            results["floor-h2load"].append(h2load(noop_port, body, args.seconds,
                                                  args.connections, args.streams, noop))
            results["cached"].append(h2load(tg_port, body, args.seconds,
                                            args.connections, args.streams, tg))
            conc = args.connections * args.streams // 2
            results["floor-pyload"].append(pyload(noop_port, noop_bodies, args.seconds, noop,
                                                  2, conc))
            results["uncached"].append(pyload(tg_port, rounds_files[r], args.seconds, tg, 2, conc))
        rss_before = tg.memory_info().rss
        print(f"flood: {args.flood} unique tokens ...", flush=True)
        flood_result = grpc_load.run(f"127.0.0.1:{tg_port}", str(flood), 2, 32, 3600)
        rss_after = tg.memory_info().rss
    summary: dict[str, object] = {k: summarize(k, v) for k, v in results.items()}
    summary["ratios"] = {
        "cached_vs_floor": _ratio(results["cached"], results["floor-h2load"]),
        "uncached_vs_floor": _ratio(results["uncached"], results["floor-pyload"])}
    summary["flood"] = {
        "tokens": flood_result["completed"], "errors": flood_result["errors"],
        "rss_before_mib": rss_before / 2**20, "rss_after_mib": rss_after / 2**20,
        "cache_bound": f"{args.cache_entries} entries / {args.cache_bytes}"}
    return summary


def quota_suite(args: argparse.Namespace, work: Path) -> dict[str, object]:
    """Cached-token Check with the quota in Redis (exact, batched), embedded, and the floor."""
    import redis as redis_client
    from tenantgate.testing.redis import RedisServer

    redis_server = RedisServer().start()
    variants = {"exact": quota_yaml("redis", "exact", redis_server.url),
                "batched": quota_yaml("redis", "batched", redis_server.url),
                "embedded": quota_yaml("memory", "exact")}
    ports = {name: free_port() for name in variants}
    configs = {name: write_config(work, ports[name], free_port(), quota=q, name=name)
               for name, q in variants.items()}
    noop_port = free_port()
    body = cached_body(work)
    results: dict[str, list[LoadResult]] = {k: [] for k in ("floor", *variants)}
    redis_cpu: dict[str, list[float]] = {k: [] for k in variants}
    stats = redis_client.Redis.from_url(redis_server.url)

    def redis_cpu_seconds() -> float:
        info = stats.info("cpu")
        return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])

    try:
        with process(noop_cmd(noop_port), noop_port) as noop, \
                process(tenantgate_cmd(configs["exact"]), ports["exact"]) as exact, \
                process(tenantgate_cmd(configs["batched"]), ports["batched"]) as batched, \
                process(tenantgate_cmd(configs["embedded"]), ports["embedded"]) as embedded:
            servers = {"exact": exact, "batched": batched, "embedded": embedded}
            for r in range(args.rounds):
                print(f"round {r + 1}/{args.rounds}", flush=True)
                results["floor"].append(h2load(noop_port, body, args.seconds, args.connections,
                                               args.streams, noop))
                for name, server in servers.items():
                    before = redis_cpu_seconds()
                    result = h2load(ports[name], body, args.seconds, args.connections,
                                    args.streams, server)
                    results[name].append(result)
                    redis_cpu[name].append((redis_cpu_seconds() - before) * 1e6
                                           / max(1, result.completed))
    finally:
        stats.close()
        redis_server.close()  # and its directory
    summary: dict[str, object] = {k: summarize(k, v) for k, v in results.items()}
    for name in variants:
        summary[name]["redis_cpu_us_per_check"] = median(redis_cpu[name])  # type: ignore[index]
    summary["ratios"] = {f"{name}_vs_floor": _ratio(results[name], results["floor"])
                         for name in variants}
    return summary


def _ratio(runs: list[LoadResult], floor: list[LoadResult]) -> dict[str, object]:
    """The ratio of the medians, and each round's own ratio: on a shared 2-vCPU VM the floor
    alone drifts by a third between rounds, so the spread says how far to trust the median."""
    paired = [r.rate / f.rate for r, f in zip(runs, floor, strict=True)]
    return {"of_medians": median([r.rate for r in runs]) / median([f.rate for f in floor]),
            "per_round": [round(p, 3) for p in paired]}


def cached_body(work: Path) -> bytes:
    return check_request(tokens.mint(tokens.load_key(work / "RS256.pem"), "RS256",
                                     tokens.claims(ISSUER, AUDIENCE, "acme", ttl=3600),
                                     kid=SIGNERS["RS256"]))


def tenantgate_cmd(config: Path) -> list[str]:
    return [str(BIN / "tenantgate"), "serve", "--config", str(config), "--log-level", "WARNING"]


def noop_cmd(port: int) -> list[str]:
    return [sys.executable, str(Path(__file__).parent / "noop_authz.py"),
            "--listen", f"127.0.0.1:{port}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", choices=["core", "quota"], default="core")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--streams", type=int, default=16, help="h2load streams per connection")
    parser.add_argument("--flood", type=int, default=200_000, help="unique tokens for the RSS test")
    parser.add_argument("--cache-entries", type=int, default=50_000)
    parser.add_argument("--cache-bytes", default="64MiB")
    parser.add_argument("--json", type=Path, help="write the summary here as JSON")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tg-bench-"))
    try:
        summary = core_suite(args, work) if args.suite == "core" else quota_suite(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "platform": platform.platform(),
                          "load_average_at_end": os.getloadavg()}
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
