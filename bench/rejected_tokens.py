"""What one replayed refused bearer token costs a Check, with the rejected-token cache on and off.

A client retrying an expired token, or a flood replaying one forged token, is refused each time;
without the cache every refusal verifies the signature again. Runs the Check servicer in-process
(no gRPC, no Envoy), audit log on and uncapped, so the figures are the handler's own cost.

    .venv/bin/python bench/rejected_tokens.py
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path

from tenantgate.testing.check import DevIssuer, LocalCheck, build_config, check_request


async def us_per_check(algorithm: str, kind: str, cache_entries: int, checks: int) -> float:
    issuer = DevIssuer(algorithm=algorithm)
    # A forger: another key under the issuer's own kid, so the signature check runs and fails.
    forger = DevIssuer(algorithm=algorithm, issuer=issuer.issuer, name=issuer.name,
                       kid=issuer.kid)
    token = (issuer.token(exp=int(time.time()) - 3600) if kind == "expired"
             else forger.token())
    work = Path(tempfile.mkdtemp(prefix="tg-rejected-"))
    try:
        config = build_config(
            work, [issuer.config()],
            credentials={"rejected_token_cache_entries": cache_entries},
            audit={"enabled": True, "path": str(work / "audit.log"), "max_lines_per_second": 0})
        request = check_request(headers={"authorization": f"Bearer {token}"})
        # The servicer itself, not LocalCheck.check(), which also reads back each audit line.
        async with LocalCheck(config) as local:
            for _ in range(50):  # warm-up: the first refusal fills the cache
                await local.servicer.Check(request, None)
            started = time.perf_counter()
            for _ in range(checks):
                await local.servicer.Check(request, None)
            return (time.perf_counter() - started) / checks * 1e6
    finally:
        shutil.rmtree(work, ignore_errors=True)


async def main(checks: int) -> None:
    print("| algorithm | token | cache off µs/Check | cache on µs/Check |")
    print("|---|---|---|---|")
    for algorithm in ("RS256", "ES256"):
        for kind in ("expired", "forged"):
            off = await us_per_check(algorithm, kind, 0, checks)
            on = await us_per_check(algorithm, kind, 10_000, checks)
            print(f"| {algorithm} | {kind} | {off:.1f} | {on:.1f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checks", type=int, default=3000)
    asyncio.run(main(parser.parse_args().checks))
