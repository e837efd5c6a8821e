"""The admin listener's stop waits for key changes still under way, and says when it gives up."""

from __future__ import annotations

import asyncio
import logging

import pytest
from tenantgate.admin.servicer import ApiKeyAdminServicer


async def test_settle_waits_for_changes_and_warns_about_those_it_gives_up_on(
        caplog: pytest.LogCaptureFixture) -> None:
    servicer = ApiKeyAdminServicer(lambda: None)  # type: ignore[arg-type,return-value]
    finishing = asyncio.ensure_future(asyncio.sleep(0.01))
    hung = asyncio.ensure_future(asyncio.Event().wait())
    for task in (finishing, hung):
        servicer._changes.add(task)
        task.add_done_callback(servicer._settled)
    with caplog.at_level(logging.WARNING, logger="tenantgate.admin"):
        await servicer.settle(0.5)
    assert finishing.done() and not hung.done()
    assert [r.getMessage() for r in caplog.records] == [
        "admin API: stopping with 1 key change(s) still waiting on the store after 0.5 s"]
    hung.cancel()
    await asyncio.wait([hung])
    await asyncio.sleep(0)  # the done callbacks run on the next turn
    assert servicer._changes == set()
