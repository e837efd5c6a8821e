"""How late the event loop runs what is due. Every Check, ShouldRateLimit and health answer
waits behind whatever holds the loop (a blocking call, a long collection, a paused VM), and
Envoy denies a Check it waited on past its ext_authz timeout: a stall shows here first."""

from __future__ import annotations

import asyncio
import logging

from tenantgate.observe.plain import PlainHistogram
from tenantgate.observe.throttle import Throttle

log = logging.getLogger("tenantgate")

LOOP_LAG = PlainHistogram(
    "tenantgate_event_loop_lag_seconds",
    "How late the event loop ran a timer due now: what every call waited on top of its work",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0))
# A stall that began before the timer fell due is seen short by up to this much: 25 ms keeps
# a 0.25 s stall (Envoy's ext_authz timeout) above the 0.1 s mark. 40 wake-ups a second cost
# nothing measurable beside thousands of Checks.
SAMPLE_SECONDS = 0.025
# Past this, a Check behind the stall may already have outlived Envoy's ext_authz timeout
# (`tenantgate envoy-config --authz-timeout`, 0.25 s by default).
STALL_SECONDS = 0.1


async def watch_loop_lag(sample: float = SAMPLE_SECONDS) -> None:
    """Runs until cancelled: sleeps `sample`, observes how late it woke, says a stall."""
    loop = asyncio.get_running_loop()
    said = Throttle(60.0)
    while True:
        due = loop.time() + sample
        await asyncio.sleep(sample)
        lag = max(0.0, loop.time() - due)
        LOOP_LAG.observe(lag)
        if lag > STALL_SECONDS and said.ready():  # as the alert: past the 0.1 bucket
            log.warning("event loop stalled for %.0f ms: calls waited that long (once a "
                        "minute; tenantgate_event_loop_lag_seconds counts each)", lag * 1000)
