"""The Redis layout of API keys: one hash per key (only its HMAC digest, never the secret), a
key-id set per tenant, a usage hash per tenant, and the revocation channel."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from tenantgate.observe.throttle import Throttle

log = logging.getLogger("tenantgate.apikeys")
_KEY = "tenantgate:apikey:{}"  # hash: one key record
_TENANT_KEYS = "tenantgate:apikeys:tenant:{}"  # set: the key ids of one tenant
_USAGE = "tenantgate:apikeys:usage:{}"  # hash: requests, revoked_attempts, key:<id>
_Command = tuple[str | int, ...]  # one Redis command and its arguments


class UnreadableKeyRecord(ValueError):
    """A stored record with a field name or value that is not UTF-8 (a hand edit)."""


@dataclass(frozen=True, slots=True)
class KeyRecord:
    key_id: str
    tenant: str
    name: str
    scopes: tuple[str, ...]
    digest: str  # hex HMAC-SHA256(hash_secret, key id + secret)
    created_at: int
    expires_at: int = 0  # 0: never
    revoked_at: int = 0  # 0: not revoked
    last_used_at: int = 0
    replaces: str = ""  # the key this one rotated out
    # The lifetime it was created with (0: none); kept apart from expires_at, which a rotation
    # shortens, so a successor gets the same lifetime however often the key is rotated.
    lifetime: int = 0

    @property
    def revoked(self) -> bool:
        return self.revoked_at > 0

    def expired(self, now: float) -> bool:
        return 0 < self.expires_at <= now

    def to_hash(self) -> dict[str, str]:
        return {"tenant": self.tenant, "name": self.name, "scopes": " ".join(self.scopes),
                "digest": self.digest, "created_at": str(self.created_at),
                "expires_at": str(self.expires_at), "revoked_at": str(self.revoked_at),
                "last_used_at": str(self.last_used_at), "replaces": self.replaces,
                "lifetime": str(self.lifetime)}

    @classmethod
    def from_hash(cls, key_id: str, raw: Mapping[Any, Any], *,
                  lenient: bool = False) -> KeyRecord | None:
        """`lenient`: bytes that are not UTF-8 become U+FFFD instead of UnreadableKeyRecord
        (for a revocation, which must work whatever a hand edit did to the record)."""
        errors = "replace" if lenient else "strict"
        try:
            fields = {_text(k, errors): _text(v, errors) for k, v in raw.items()}
        except UnicodeDecodeError:
            raise UnreadableKeyRecord(key_id) from None
        if not fields.get("digest") or not fields.get("tenant"):
            return None  # absent, or a half-written record: treated as unknown
        return cls(key_id=key_id, tenant=fields["tenant"], name=fields.get("name", ""),
                   scopes=tuple(fields.get("scopes", "").split()), digest=fields["digest"],
                   created_at=_int(fields.get("created_at")),
                   expires_at=_instant(fields.get("expires_at")),
                   revoked_at=_instant(fields.get("revoked_at")),
                   last_used_at=_int(fields.get("last_used_at")),
                   replaces=fields.get("replaces", ""),
                   lifetime=_lifetime(fields))


@dataclass(frozen=True, slots=True)
class Usage:
    tenant: str
    requests: int
    revoked_attempts: int
    per_key: dict[str, int]


class ApiKeyStore:
    """Every Redis command API keys use; raises redis errors, the callers decide what they mean."""

    def __init__(self, client: Redis, channel: str) -> None:
        self.client = client
        self.channel = channel
        self._unreadable_said = Throttle(60.0)

    async def get(self, key_id: str, *, lenient: bool = False) -> KeyRecord | None:
        raw = await self.client.hgetall(_KEY.format(key_id))
        return KeyRecord.from_hash(key_id, raw, lenient=lenient)

    async def put(self, record: KeyRecord) -> None:
        async with self.client.pipeline(transaction=True) as pipe:
            fields = record.to_hash()
            pipe.hset(_KEY.format(record.key_id), mapping={k: v for k, v in fields.items()})
            pipe.sadd(_TENANT_KEYS.format(record.tenant), record.key_id)
            await pipe.execute()

    async def update(self, record: KeyRecord, *, expires_at: int | None = None,
                     revoked_at: int | None = None) -> KeyRecord:
        """Change fields of a stored key and tell every replica to drop its cached copy."""
        changes = {name: value for name, value in
                   (("expires_at", expires_at), ("revoked_at", revoked_at)) if value is not None}
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(_KEY.format(record.key_id),
                      mapping={k: str(v) for k, v in changes.items()})
            pipe.publish(self.channel, record.key_id)
            await pipe.execute()
        return replace(record, expires_at=record.expires_at if expires_at is None else expires_at,
                       revoked_at=record.revoked_at if revoked_at is None else revoked_at)

    async def list(self, tenant: str) -> list[KeyRecord]:
        members = await self.client.smembers(_TENANT_KEYS.format(tenant))
        key_ids = sorted(self._readable(members, tenant, "key-id set"))
        async with self.client.pipeline(transaction=False) as pipe:
            for key_id in key_ids:
                pipe.hgetall(_KEY.format(key_id))
            raws = await pipe.execute()
        records = (_listable(k, raw) for k, raw in zip(key_ids, raws, strict=True))
        return sorted((r for r in records if r is not None), key=lambda r: (r.created_at, r.key_id))

    async def add_usage(self, increments: Mapping[tuple[str, str], int],
                        last_used: Mapping[str, int]) -> dict[tuple[str, str], int]:
        """Add (tenant, usage field) increments and write last-used times, in one pipelined
        round trip. Returns the increments Redis certainly did not apply (error replies);
        raises a redis error or OSError only when nothing was sent (no connection).

        These are usage statistics, not security decisions, so a doubt counts as applied: an
        increment whose reply was lost after the write (a timeout, a dropped connection) is in
        neither the result nor an exception, as re-sending what Redis may have applied would
        count it twice. A last-used write that failed is not returned either: the key's next
        use after `last_used_interval` writes a newer one."""
        commands: list[_Command] = [
            ("HINCRBY", _USAGE.format(tenant), field, count)
            for (tenant, field), count in increments.items()]
        # Its own command, after the counts: a Redis user refused scripting (NOPERM) or a
        # script error fails the last-used write alone, never the counts beside it.
        commands += [("EVAL", _SET_IF_EXISTS, 1, _KEY.format(key_id), "last_used_at", str(when))
                     for key_id, when in last_used.items()]
        replies = await self._pipeline(commands)
        # Fewer replies than commands: the rest were lost after the write (see above).
        answered = zip(increments.items(), replies, strict=False)
        return {item: count for (item, count), reply in answered
                if isinstance(reply, ResponseError)}

    async def _pipeline(self, commands: Sequence[_Command]) -> Sequence[Any]:
        """The replies to `commands`, an error reply as its ResponseError, for as many as were
        read. On one connection taken from the pool, not through redis-py's pipeline: that
        cannot tell a connection never made from a reply lost after the write, and a client
        set to retry would send the whole pipeline again."""
        pool = self.client.connection_pool
        connection = await pool.get_connection()  # a failure here: nothing was sent
        replies: list[Any] = []
        try:
            await connection.send_packed_command(connection.pack_commands(commands))
            for _ in commands:
                try:
                    replies.append(await connection.read_response())
                except ResponseError as exc:  # that command's own failure
                    replies.append(exc)
        except (RedisError, OSError):
            await connection.disconnect()  # a half-read connection must not be reused
        except BaseException:
            await connection.disconnect()
            raise
        finally:
            await pool.release(connection)
        return replies

    async def usage(self, tenant: str) -> Usage:
        stored = await self.client.hgetall(_USAGE.format(tenant))
        raw = {name: _int(stored[field])
               for name, field in self._readable(stored, tenant, "usage hash").items()}
        per_key = {k.removeprefix("key:"): v for k, v in raw.items() if k.startswith("key:")}
        return Usage(tenant, raw.get("requests", 0), raw.get("revoked_attempts", 0), per_key)

    def _readable(self, names: Iterable[Any], tenant: str, where: str) -> dict[str, Any]:
        """The UTF-8 names as text, each mapped to the name as stored. Others, from a hand
        edit, are left out, as unreadable records are, and said at most once a minute: one
        must not fail the tenant's whole listing or usage."""
        readable: dict[str, Any] = {}
        for name in names:
            try:
                readable[_text(name)] = name
            except UnicodeDecodeError:
                if self._unreadable_said.ready():
                    log.warning("API keys of tenant %s: an entry of the %s is not UTF-8: left "
                                "out until fixed", tenant, where)
        return readable


# KEYS[1] the key record hash; ARGV[1] field, ARGV[2] value. Sets the field only if the hash exists.
_SET_IF_EXISTS = ("if redis.call('EXISTS', KEYS[1]) == 1 then "
                  "return redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end return 0")


def _listable(key_id: str, raw: Mapping[Any, Any]) -> KeyRecord | None:
    # One record a hand edit broke must not fail the tenant's whole listing; it works for
    # no request either, so it is left out like a half-written one.
    try:
        return KeyRecord.from_hash(key_id, raw)
    except UnreadableKeyRecord:
        return None


def _text(value: Any, errors: str = "strict") -> str:
    return value.decode(errors=errors) if isinstance(value, bytes) else str(value)


def _lifetime(fields: Mapping[str, str]) -> int:
    if "lifetime" in fields:
        return _int(fields["lifetime"])
    # Written before the field existed: right unless the key has been rotated since.
    expires_at, created_at = _int(fields.get("expires_at")), _int(fields.get("created_at"))
    return max(expires_at - created_at, 1) if expires_at else 0


def _instant(value: str | None) -> int:
    """An expires_at or revoked_at field: absent, empty or 0 for never. One that is there but
    not a whole number of seconds (a hand-written `1700000100.25`, `true`) counts as long past:
    a revocation an operator wrote in another format must revoke, not be read as "never"."""
    if value is None or value.strip() in ("", "0"):
        return 0
    try:
        return max(int(value), 1)
    except ValueError:
        return 1


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
