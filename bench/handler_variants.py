"""`tenantgate serve` with its Check handler swapped, to measure what each part of a Check costs
in the real server behind Envoy (bench/one_connection.py starts these). For measurement only:
some variants skip checks a real Check must make.

    python bench/handler_variants.py VARIANT serve --config FILE ...

Variants:
  full        the real Check, unchanged
  const       answers a constant empty allow: the process and gRPC server without the handler
  replay      answers the real allow of its first Check every time: the response's size
  timed       the real Check, timing its parts (perf_counter_ns); medians as JSON to
              $TG_TIMINGS when the server stops
  fastlane    remembers identity, tenant and route per (Authorization, method, path) and skips
              those stages afterwards (ignores expiry and key withdrawal: an upper bound only)
  no-quota    the real Check without its quota stage
  no-observe  the real Check without its metrics and audit step
  exact       the real Check, with the quota in `exact` mode (one Redis round trip per Check)
  exact-timed `timed`, with the quota in `exact` mode
"""

from __future__ import annotations

import atexit
import inspect
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from tenantgate import authz, pipeline
from tenantgate.decision import Allow, Decision, encode_response
from tenantgate.pipeline import CheckState, allow, decide
from tenantgate.quota.stage import quota_stage
from tenantgate.request import RequestView

VARIANTS = ("full", "const", "replay", "timed", "fastlane", "no-quota", "no-observe",
            "exact", "exact-timed")
STAGES = ("sanitize", "credential_stage", "cached_identity", "tenant_stage", "policy_stage",
          "quota_stage", "allow")
Handler = Callable[..., Any]
original: Handler = authz.AuthorizationServicer.check_parsed


def const() -> Handler:
    answer = encode_response(Allow(), "bench")

    async def check_parsed(self: Any, parsed: Any, context: Any) -> bytes:
        return answer
    return check_parsed


def replay() -> Handler:
    first: list[bytes] = []

    async def check_parsed(self: Any, parsed: Any, context: Any) -> bytes:
        if not first:
            first.append(await original(self, parsed, context))
        return first[0]
    return check_parsed


def _timing(name: str, fn: Callable[..., Any], samples: dict[str, list[int]]) -> Callable[..., Any]:
    spent = samples.setdefault(name, [])
    if inspect.iscoroutinefunction(fn):
        async def timed_coroutine(*args: Any) -> Any:
            started = time.perf_counter_ns()
            result = await fn(*args)
            spent.append(time.perf_counter_ns() - started)
            return result
        return timed_coroutine

    def timed(*args: Any) -> Any:
        started = time.perf_counter_ns()
        result = fn(*args)
        spent.append(time.perf_counter_ns() - started)
        return result
    return timed


def timed() -> None:
    """The real Check, with a clock around each of its steps and stages (each wrapper adds
    about 0.3 µs); medians to $TG_TIMINGS when the server stops."""
    samples: dict[str, list[int]] = {}
    for stage in STAGES:
        setattr(pipeline, stage, _timing(stage, getattr(pipeline, stage), samples))
    # The names check_parsed looks up in authz, and the handler itself.
    for part, name in (("decide", "decide"), ("encode", "encode_response"),
                       ("observe", "_observe")):
        setattr(authz, name, _timing(part, getattr(authz, name), samples))
    RequestView.from_check = staticmethod(  # type: ignore[method-assign]
        _timing("view", RequestView.from_check, samples))
    handler = authz.AuthorizationServicer
    handler.check_parsed = _timing("total", original, samples)  # type: ignore[method-assign]

    def report() -> None:
        medians: dict[str, float | int] = {
            name: statistics.median(ns) / 1000 for name, ns in samples.items() if ns}
        medians["checks"] = len(samples["total"])
        with open(os.environ["TG_TIMINGS"], "w") as out:
            json.dump(medians, out)
    if "TG_TIMINGS" in os.environ:
        atexit.register(report)


def fastlane() -> None:
    """The real Check, whose decide() skips the credential, identity, tenant and policy stages
    for an (Authorization, method, path) it has seen, reusing what they found the first time."""
    remembered: dict[tuple[str | None, str, str], tuple[Any, ...]] = {}

    async def remembering_decide(state: CheckState) -> Decision:
        view = state.request
        key = (view.authorization, view.method, view.path)
        if (known := remembered.get(key)) is None:
            decision = await decide(state)
            remembered[key] = (state.credential, state.identity, state.tenant, state.route)
            return decision
        state.credential, state.identity, state.tenant, state.route = known
        return await quota_stage(state) or allow(state)
    setattr(authz, "decide", remembering_decide)  # noqa: B010 - the name check_parsed looks up


def install(variant: str) -> None:
    if variant == "no-quota":
        async def no_quota(state: CheckState) -> None:
            return None
        setattr(pipeline, "quota_stage", no_quota)  # noqa: B010 - a name decide() looks up
    elif variant == "no-observe":
        authz._observe = lambda *args: None
    elif variant in ("timed", "exact-timed"):
        timed()
    elif variant == "fastlane":
        fastlane()
    elif variant not in ("full", "exact"):  # exact: the real Check; the config sets the mode
        handler = {"const": const, "replay": replay}[variant]()
        authz.AuthorizationServicer.check_parsed = handler  # type: ignore[method-assign]


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in VARIANTS:
        print(f"usage: handler_variants.py {{{','.join(VARIANTS)}}} serve --config FILE ...",
              file=sys.stderr)
        return 2
    install(sys.argv[1])
    from tenantgate.cli import main as tenantgate

    return tenantgate(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
