"""tenantgate_apikey_revocation_subscribed: 1 while a verifier's revocation subscription is
confirmed, 0 while not, and no series once the verifiers on its channel are closed. Across a
reload the newest verifier's state is shown, whichever of the two closes first."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY
from redis.exceptions import ConnectionError as RedisConnectionError
from tenantgate.config.load import parse_config
from tenantgate.identity.apikeys import ApiKeys

CHANNEL = "tenantgate:test:revocation-gauge"  # no other test's


def shown() -> float | None:
    return REGISTRY.get_sample_value("tenantgate_apikey_revocation_subscribed",
                                     {"channel": CHANNEL})


class Channel:
    """Stands in for ApiKeys._listen: each subscription is confirmed at once and held until
    `lose` is set; the wait before subscribing again lasts until the verifier is closed."""

    def __init__(self) -> None:
        self.lose = asyncio.Event()

    async def listen(self, keys: ApiKeys) -> None:
        keys._on_subscribed()
        await self.lose.wait()
        raise RedisConnectionError("Connection lost")

    @staticmethod
    async def never(seconds: float) -> None:
        await asyncio.Event().wait()


def verifier(directory: Path, channel: Channel) -> ApiKeys:
    directory.mkdir()
    (directory / "hash.key").write_text("h" * 40)
    (directory / "c.key").write_text("c" * 40)
    config = parse_config(yaml.safe_dump({
        "context": {"active_key": "c1", "keys": [{"id": "c1", "secret": {"fromFile": "c.key"}}]},
        "api_keys": {"hash_secret": {"fromFile": "hash.key"}, "channel": CHANNEL,
                     "redis_url": "redis://127.0.0.1:1/0"},  # never dialled here
    }), base_dir=directory)
    assert config.api_keys is not None
    keys = ApiKeys(config.api_keys, frozenset({"acme"}), None, sleep=channel.never)
    keys._listen = lambda: channel.listen(keys)  # type: ignore[method-assign]
    keys._check_durability = lambda: None  # type: ignore[method-assign]
    return keys


async def until_shown(value: float) -> None:
    async with asyncio.timeout(5):  # a bound for a hung test, not an assertion
        while shown() != value:
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("closed_first", ["old", "new"], ids=[
    "reload-retires-the-old-verifier", "new-verifier-whose-start-failed"])
async def test_the_newest_verifier_on_a_channel_owns_its_series(
        tmp_path: Path, closed_first: str) -> None:
    old_channel, new_channel = Channel(), Channel()
    old, new = verifier(tmp_path / "old", old_channel), verifier(tmp_path / "new", new_channel)
    assert shown() is None  # only while API keys are configured and started
    try:
        await old.start()
        assert shown() == 1.0
        await new.start()  # a reload's verifier, on the same channel
        assert shown() == 1.0
        new_channel.lose.set()
        await until_shown(0.0)  # the new one's state, though the old one is still subscribed
        if closed_first == "old":
            await old.close()
            assert shown() == 0.0  # not removed, nor set by the old one on its way out
            await new.close()
        else:
            await new.close()
            assert shown() == 1.0  # back to the verifier still deciding
            await old.close()
        assert shown() is None
    finally:
        await old.close()
        await new.close()
