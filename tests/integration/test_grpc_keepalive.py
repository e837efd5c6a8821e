"""Envoy pings an idle gRPC connection to tenantgate (every 10 s, over TCP, to find a dead
peer): the server must allow that, not answer the third ping with GOAWAY (too_many_pings)."""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import pytest
from grpc_health.v1 import health_pb2
from tcp_app import app_on_tcp
from tenantgate.app import App

# The server permits a ping without data every 5 s; Envoy's generated config pings every
# 10 s. Each ping here leaves at least this long after the last one was answered: later only
# spaces them more, which a correct server allows all the more, and which gRPC's default
# policy (5 min) refuses all the same.
PING_EVERY = 5.2
# Under the default policy the first ping is free and each later one a strike; the third
# strike (max_ping_strikes 2), at the fourth ping, is answered with GOAWAY (too_many_pings).
PINGS = 4
BOUND = 30.0  # any one wait for the server: only a hang breaker


class H2Client:
    """One HTTP/2 connection driven frame by frame: which pings go out is known exactly, and
    every event the server sends is kept."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.events: list[h2.events.Event] = []

    @classmethod
    async def connect(cls, address: str) -> H2Client:
        host, port = address.rsplit(":", 1)
        client = cls(*await asyncio.open_connection(host, int(port)))
        client.conn.initiate_connection()
        await client.flush()
        return client

    async def flush(self) -> None:
        self.writer.write(self.conn.data_to_send())
        await self.writer.drain()

    async def until(self, seen: type[h2.events.Event], what: str) -> h2.events.Event:
        """Reads until an event of type `seen` arrives (a GOAWAY or a closed connection fails)."""
        async with asyncio.timeout(BOUND):
            while True:
                for event in self.events:
                    if isinstance(event, seen):
                        self.events.remove(event)
                        return event
                    assert not isinstance(event, h2.events.ConnectionTerminated), (
                        f"GOAWAY while waiting for {what}: {event}")
                data = await self.reader.read(65536)
                assert data, f"connection closed while waiting for {what}"
                self.events += self.conn.receive_data(data)
                await self.flush()  # settings and window acknowledgements

    async def health_check(self) -> int:
        """A grpc.health.v1 Check on a new stream; its grpc-status."""
        stream = self.conn.get_next_available_stream_id()
        self.conn.send_headers(stream, [
            (":method", "POST"), (":scheme", "http"), (":path", "/grpc.health.v1.Health/Check"),
            (":authority", "tenantgate"), ("content-type", "application/grpc"),
            ("te", "trailers")])
        message = health_pb2.HealthCheckRequest().SerializeToString()
        self.conn.send_data(stream, struct.pack(">BI", 0, len(message)) + message,
                            end_stream=True)
        await self.flush()
        trailers = await self.until(h2.events.TrailersReceived, "the Check's trailers")
        assert isinstance(trailers, h2.events.TrailersReceived)
        return int(dict(trailers.headers)[b"grpc-status"])

    def goaway(self) -> list[h2.events.Event]:
        return [e for e in self.events if isinstance(e, h2.events.ConnectionTerminated)]

    async def ping(self, n: int) -> None:
        assert not self.goaway(), f"GOAWAY before ping {n}: {self.goaway()}"
        payload = struct.pack(">Q", n)
        self.conn.ping(payload)
        await self.flush()
        ack = await self.until(h2.events.PingAckReceived, f"the ack of ping {n}")
        assert isinstance(ack, h2.events.PingAckReceived) and ack.ping_data == payload

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[App]:
    async with app_on_tcp(tmp_path) as started:
        yield started


async def test_an_idle_connection_that_envoy_pings_stays_open(app: App) -> None:
    client = await H2Client.connect(str(app.runtime.config.listen.grpc))
    try:
        assert await client.health_check() == 0  # then idle: pings without data only
        for n in range(1, PINGS + 1):
            last = time.monotonic()
            while time.monotonic() - last < PING_EVERY:  # at least, never less
                await asyncio.sleep(PING_EVERY - (time.monotonic() - last))
            await client.ping(n)
        # Frames are answered in order: a GOAWAY for any of those pings comes before this.
        assert not client.goaway()
        assert await client.health_check() == 0
        assert not client.goaway()
    finally:
        client.close()
