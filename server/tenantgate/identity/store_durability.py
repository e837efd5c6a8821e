"""A best-effort look at the API-key Redis's settings: an eviction policy that may drop key
records, or no persistence at all, is warned about once per finding."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger("tenantgate.apikeys")
_SETTINGS = ("maxmemory-policy", "appendonly", "save")
_SEE = 'see docs/api-keys.md, "The store must be durable"'


class StoreDurability:
    """Reads the settings on each new connection epoch and warns about a finding only when it
    differs from the one last warned about, so a reconnect loop does not repeat it."""

    def __init__(self) -> None:
        self._said: dict[str, str] = {}  # finding -> the setting it was last warned for
        self.checked = asyncio.Event()  # set after every check, whatever its outcome

    async def check(self, client: Redis, timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                settings = await _read(client)
        except (RedisError, OSError) as exc:  # TimeoutError included
            # Managed Redis often refuses or renames CONFIG: not knowing is not a problem.
            log.debug(
                "API-key store settings not readable (%s): durability not checked",
                type(exc).__name__,
            )
        else:
            self._judge(settings)
        finally:
            self.checked.set()

    def _judge(self, settings: Mapping[str, str]) -> None:
        policy = settings.get("maxmemory-policy", "")
        self._say(
            "eviction",
            policy if policy.startswith("allkeys-") else None,
            "API-key Redis has maxmemory-policy %s: under memory pressure it may evict "
            "key records, and those keys stop working; use noeviction or volatile-* (%s)",
            policy,
        )
        # Unknown values (a fork without the setting) are not a finding: no false alarm.
        no_persistence = settings.get("appendonly") == "no" and settings.get("save") == ""
        self._say(
            "persistence",
            "off" if no_persistence else None,
            "API-key Redis has neither AOF (appendonly) nor RDB snapshots (save): a "
            "restart loses every API key (%s)",
        )

    def _say(self, finding: str, value: str | None, message: str, *args: str) -> None:
        if value is None:
            self._said.pop(finding, None)  # fixed: a relapse is warned about again
        elif self._said.get(finding) != value:
            self._said[finding] = value
            log.warning(message, *args, _SEE)


async def _read(client: Redis) -> dict[str, str]:
    # One CONFIG GET per setting: Redis before 7 takes a single pattern per call.
    async with client.pipeline(transaction=False) as pipe:
        for name in _SETTINGS:
            pipe.config_get(name)
        replies: list[Any] = await pipe.execute()
    settings: dict[str, str] = {}
    for reply in replies:
        settings.update({_text(k): _text(v) for k, v in dict(reply).items()})
    return settings


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
