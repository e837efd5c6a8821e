"""The store-down warning says why the store failed (the first error's class and message):
`quota store redis unavailable (failing closed)` alone left a refused ACL, a rotated password
or a demoted primary to be guessed. Never the password."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import pytest
import redis
from tenantgate.config.model import Config
from tenantgate.quota.limiter import Limiter
from tenantgate.testing.redis import RedisServer

MakeConfig = Callable[..., Config]
USER, PASSWORD = "tg-reason", "reason-s3cret-value"
# What tenantgate's exact quota needs, less what each case takes away.
QUOTA = ["+evalsha", "+eval", "+script|load", "+time", "+get", "+set", "+ping"]


@pytest.fixture
def acl(fresh_redis: RedisServer) -> Iterator[Callable[[list[str]], str]]:
    """`acl(commands)`: a user allowed those commands on tg:* keys; its URL."""
    admin = redis.Redis(port=fresh_redis.port)

    def make(commands: list[str]) -> str:
        admin.acl_setuser(USER, enabled=True, reset=True, passwords=[f"+{PASSWORD}"],
                          keys=["tg:*"], commands=commands)
        return f"redis://{USER}:{PASSWORD}@127.0.0.1:{fresh_redis.port}/0"

    yield make
    admin.acl_deluser(USER)
    admin.close()


async def _warning(url: str, quota_config: MakeConfig,
                   make_limiter: Callable[[Config], Limiter],
                   caplog: pytest.LogCaptureFixture) -> str:
    config = quota_config("  default_plan: free\n  plans: {free: {limits: ['5/s']}}\n", url)
    limiter = make_limiter(config)
    plan = limiter.plan_for("acme", None, False)
    assert plan is not None
    with caplog.at_level(logging.WARNING, logger="tenantgate.quota"):
        verdict = await limiter.check(plan, "acme", "GET", "/")
    assert verdict.unavailable
    [record] = [r for r in caplog.records if "unavailable" in r.getMessage()]
    said = record.getMessage()
    assert PASSWORD not in said
    assert said.startswith("quota store redis unavailable (failing closed): ")
    return said


@pytest.mark.parametrize("missing", ["+time", "+evalsha"])
async def test_a_command_the_acl_refuses_is_named(
        missing: str, acl: Callable[[list[str]], str], quota_config: MakeConfig,
        make_limiter: Callable[[Config], Limiter], caplog: pytest.LogCaptureFixture) -> None:
    url = acl([c for c in QUOTA if c != missing])
    said = await _warning(url, quota_config, make_limiter, caplog)
    # 7.x says NOPERM; 6.2 refuses a script's TIME as "can't run this command".
    assert "NOPERM" in said or "can't run this command" in said
    assert missing[1:] in said.lower() or "script" in said.lower()


async def test_a_wrong_password_is_named(
        acl: Callable[[list[str]], str], fresh_redis: RedisServer, quota_config: MakeConfig,
        make_limiter: Callable[[Config], Limiter], caplog: pytest.LogCaptureFixture) -> None:
    url = acl(QUOTA)
    with redis.Redis(port=fresh_redis.port) as admin:  # rotated under tenantgate
        admin.acl_setuser(USER, passwords=[f"-{PASSWORD}", "+the-new-one"])
    said = await _warning(url, quota_config, make_limiter, caplog)
    assert "WRONGPASS" in said
