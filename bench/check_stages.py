"""Where a cached-token Check's cost goes inside the real server: tenantgate with its Check cut
short after each stage, interleaved with the no-op floor.

    .venv/bin/python bench/check_stages.py --rounds 3

Stages (each a real `tenantgate serve` whose Check answers a constant OK at that point):
  constant      nothing: the server, config and listeners of tenantgate, no Check work
  request-view  RequestView.from_check only
  token-lookup  RequestView plus the token-cache lookup
  full          the unmodified Check
A first Check of every stage runs the full path, so the token is in the cache.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from check_bench import cached_body, noop_cmd, tenantgate_cmd, write_config
from harness import free_port, h2load, process

STAGES = ("constant", "request-view", "token-lookup", "full")
OK = b"\x0a\x00"  # a CheckResponse with an OK status


def _patched_server(stage: str) -> None:
    """Run `tenantgate serve` (argv) with Check cut short after `stage`."""
    import time

    from tenantgate import authz
    from tenantgate.cli import main
    from tenantgate.identity.token_cache import token_key
    from tenantgate.request import RequestView

    full = authz.AuthorizationServicer.check_parsed

    async def check(self: authz.AuthorizationServicer, parsed: tuple[object, int],
                    context: object) -> bytes:
        runtime = self._get_runtime()
        if stage == "constant" and runtime.token_cache.size_bytes:
            return OK
        view = RequestView.from_check(*parsed)  # type: ignore[arg-type]
        if stage == "request-view" and runtime.token_cache.size_bytes:
            return OK
        token = (view.authorization or "").partition(" ")[2]
        if runtime.token_cache.get(token_key(token), time.time()) is not None:
            return OK
        return await full(self, parsed, context)  # type: ignore[arg-type]

    if stage != "full":
        authz.AuthorizationServicer.check_parsed = check  # type: ignore[method-assign]
    sys.exit(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tg-stages-"))
    write_config(work, free_port(), free_port())
    body = cached_body(work)
    ratios: dict[str, list[float]] = {s: [] for s in STAGES}
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, work, ignore_errors=True)  # after the servers stop
        noop_port = free_port()
        noop = stack.enter_context(process(noop_cmd(noop_port), noop_port))
        servers = {}
        for stage in STAGES:
            port = free_port()
            config = write_config(work, port, free_port(), name=f"stage-{stage}")
            cmd = [sys.executable, __file__, "--serve-stage", stage, *tenantgate_cmd(config)[1:]]
            servers[stage] = (port, stack.enter_context(process(cmd, port)))
            h2load(port, body, 1, 1, 1, servers[stage][1])  # the token into the cache
        for r in range(args.rounds):
            print(f"round {r + 1}/{args.rounds}", flush=True)
            for stage, (port, server) in servers.items():
                floor = h2load(noop_port, body, args.seconds, 4, 16, noop)
                result = h2load(port, body, args.seconds, 4, 16, server)
                ratios[stage].append(result.rate / floor.rate)
    for stage in STAGES:
        values = ", ".join(f"{v:.2f}" for v in ratios[stage])
        print(f"{stage:13s} x floor {statistics.median(ratios[stage]):.2f}  ({values})")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--serve-stage":
        stage = sys.argv[2]
        sys.argv = ["tenantgate", *sys.argv[3:]]
        _patched_server(stage)
    else:
        main()
