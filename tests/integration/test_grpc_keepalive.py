"""Envoy pings an idle gRPC connection to tenantgate (every 10 s, over TCP, to find a dead
peer): the server must allow that, not answer the third ping with GOAWAY (too_many_pings)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tcp_app import app_on_tcp
from tenantgate.app import App

PING_EVERY_MS = 5000  # the least the server permits; Envoy's generated config pings every 10 s
IDLE_SECONDS = 17  # three pings: gRPC's default policy sends GOAWAY at the third


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[App]:
    async with app_on_tcp(tmp_path) as started:
        yield started


async def test_an_idle_connection_that_envoy_pings_stays_open(app: App) -> None:
    options = [("grpc.keepalive_time_ms", PING_EVERY_MS), ("grpc.keepalive_timeout_ms", 2000),
               ("grpc.keepalive_permit_without_calls", 1),
               ("grpc.http2.max_pings_without_data", 0),
               ("grpc.http2.min_time_between_pings_ms", PING_EVERY_MS)]
    async with grpc.aio.insecure_channel(str(app.runtime.config.listen.grpc),
                                         options=options) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert channel.get_state() == grpc.ChannelConnectivity.READY
        await asyncio.sleep(IDLE_SECONDS)  # idle, pinged; nothing here is timed
        # A GOAWAY would have sent the channel to IDLE (it reconnects only on the next call).
        assert channel.get_state() == grpc.ChannelConnectivity.READY
