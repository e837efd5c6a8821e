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
from tenantgate.decision import Allow, encode_response
from tenantgate.pipeline import CheckState, allow, decide
from tenantgate.quota.stage import quota_stage
from tenantgate.request import RequestView

VARIANTS = ("full", "const", "replay", "timed", "fastlane", "no-quota", "no-observe")
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


def timed() -> Handler:
    """The real Check's own sequence, with a clock read between its parts and around each
    stage (the stage wrappers add about 0.3 µs each)."""
    samples: dict[str, list[int]] = {}
    for stage in STAGES:
        setattr(pipeline, stage, _timing(stage, getattr(pipeline, stage), samples))
    parts = {name: samples.setdefault(name, []) for name in (
        "view", "decide", "encode", "observe", "total")}

    async def check_parsed(self: Any, parsed: Any, context: Any) -> bytes:
        request, size = parsed
        t0 = time.perf_counter_ns()
        runtime = self._get_runtime().pin()
        try:
            view = RequestView.from_check(request, size)
            state = CheckState(runtime, view)
            t1 = time.perf_counter_ns()
            decision = await decide(state)
            t2 = time.perf_counter_ns()
            answer = encode_response(decision, view.request_id)
            t3 = time.perf_counter_ns()
            authz._observe(state, decision, (t3 - t0) / 1e9)
            t4 = time.perf_counter_ns()
        finally:
            runtime.unpin()
        for name, ns in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0), strict=True):
            parts[name].append(ns)
        return answer

    def report() -> None:
        medians = {name: statistics.median(ns) / 1000 for name, ns in samples.items() if ns}
        medians["checks"] = len(parts["total"])
        with open(os.environ["TG_TIMINGS"], "w") as out:
            json.dump(medians, out)
    if "TG_TIMINGS" in os.environ:
        atexit.register(report)
    return check_parsed


def fastlane() -> Handler:
    remembered: dict[tuple[str | None, str, str], tuple[Any, ...]] = {}

    async def check_parsed(self: Any, parsed: Any, context: Any) -> bytes:
        request, size = parsed
        started = time.perf_counter()
        runtime = self._get_runtime().pin()
        try:
            view = RequestView.from_check(request, size)
            state = CheckState(runtime, view)
            key = (view.authorization, view.method, view.path)
            if (known := remembered.get(key)) is None:
                decision = await decide(state)
                remembered[key] = (state.credential, state.identity, state.tenant, state.route)
            else:
                state.credential, state.identity, state.tenant, state.route = known
                decision = await quota_stage(state) or allow(state)
            authz._observe(state, decision, time.perf_counter() - started)
            return encode_response(decision, view.request_id)
        finally:
            runtime.unpin()
    return check_parsed


def install(variant: str) -> None:
    if variant == "no-quota":
        async def no_quota(state: CheckState) -> None:
            return None
        setattr(pipeline, "quota_stage", no_quota)  # noqa: B010 - a name decide() looks up
    elif variant == "no-observe":
        authz._observe = lambda *args: None
    elif variant != "full":
        handler = {"const": const, "replay": replay, "timed": timed, "fastlane": fastlane}
        authz.AuthorizationServicer.check_parsed = handler[variant]()  # type: ignore[method-assign]


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
