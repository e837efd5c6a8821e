"""An admin call pins the runtime it started on, as a Check does, so a reload that retires that
runtime waits for the call to end before closing it."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import Any, NoReturn

import grpc
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from tenantgate.admin.servicer import ApiKeyAdminServicer
from tenantgate.identity.apikey_manager import KeyManager

pytestmark = pytest.mark.unit


class CountingRuntime:
    """The parts of a Runtime the admin servicer touches, with pin() counted."""

    def __init__(self, api_keys: Any) -> None:
        self.api_keys = api_keys
        self.tenants = SimpleNamespace(valid_id=lambda t: True, resolve=lambda t: None)
        self.in_flight = 0

    def pin(self) -> CountingRuntime:
        self.in_flight += 1
        return self

    def unpin(self) -> None:
        self.in_flight -= 1


class Aborted(Exception):
    pass


class Context:
    async def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        raise Aborted(code, details)


async def test_the_runtime_stays_pinned_while_the_call_runs_and_is_released_after() -> None:
    runtime = CountingRuntime(api_keys=SimpleNamespace(store=object()))
    servicer = ApiKeyAdminServicer(lambda: runtime)  # type: ignore[arg-type, return-value]
    started, finish = asyncio.Event(), asyncio.Event()

    async def action(manager: KeyManager) -> str:
        started.set()
        await finish.wait()
        return "done"

    call = asyncio.create_task(servicer._run(Context(), action))  # type: ignore[arg-type]
    await started.wait()
    assert runtime.in_flight == 1
    finish.set()
    assert await call == "done"
    assert runtime.in_flight == 0


async def test_a_call_that_aborts_releases_its_runtime() -> None:
    runtime = CountingRuntime(api_keys=None)  # FAILED_PRECONDITION: no API keys configured
    servicer = ApiKeyAdminServicer(lambda: runtime)  # type: ignore[arg-type, return-value]

    async def action(manager: KeyManager) -> None:
        raise AssertionError("not reached")

    with pytest.raises(Aborted) as refused:
        await servicer._run(Context(), action)  # type: ignore[arg-type]
    assert refused.value.args[0] == grpc.StatusCode.FAILED_PRECONDITION
    assert runtime.in_flight == 0


async def test_a_store_failure_releases_its_runtime_and_is_said_with_the_password_masked(
        caplog: pytest.LogCaptureFixture) -> None:
    runtime = CountingRuntime(api_keys=SimpleNamespace(store=object(),
                                                       store_secrets=["s3cret-pass"]))
    servicer = ApiKeyAdminServicer(lambda: runtime)  # type: ignore[arg-type, return-value]

    async def action(manager: KeyManager) -> None:
        raise RedisConnectionError("AUTH s3cret-pass refused")

    with pytest.raises(Aborted) as refused:
        await servicer._run(Context(), action)  # type: ignore[arg-type]
    assert refused.value.args == (grpc.StatusCode.UNAVAILABLE, "key store unavailable")
    assert runtime.in_flight == 0
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        "API-key store unavailable (admin API calls fail with UNAVAILABLE): "
        "ConnectionError: AUTH *** refused"]
