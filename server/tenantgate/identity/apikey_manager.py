"""Managing API keys for the admin API: create (the secret is returned once), list, rotate with
an overlap, revoke (pushed to every replica), and reading usage."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from tenantgate.config.apikeys import MAX_LIFETIME_SECONDS, NO_OVERLAP
from tenantgate.identity.apikey_store import KeyRecord, UnreadableKeyRecord, Usage
from tenantgate.identity.apikeys import ApiKeys, format_key, new_key_id, new_secret

_SCOPE = re.compile(r"[!#-\[\]-~]{1,128}")  # printable ASCII without space, quote or backslash
_MAX_SCOPES = 64
_MAX_NAME = 128
_PAGE_TOKEN_SECONDS = re.compile(r"-?[0-9]{1,64}")
_KEY_ID = re.compile(r"[0-9a-f]{16}")


class KeyAdminError(Exception):
    """A refused admin request; `code` is one of: invalid_argument, not_found,
    failed_precondition."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class NewKey:
    record: KeyRecord
    api_key: str  # the full plaintext key: returned to the caller once, never stored


class KeyManager:
    def __init__(self, keys: ApiKeys, valid_tenant: Callable[[str], bool],
                 admitted_tenant: Callable[[str], bool]) -> None:
        """`admitted_tenant`: whether a request for the tenant could pass the tenant rules (in
        the registry, or unknown tenants allowed); keys are created only for those."""
        self._keys = keys
        self._store = keys.store
        self._valid_tenant = valid_tenant
        self._admitted_tenant = admitted_tenant

    async def create(self, tenant: str, name: str, scopes: list[str], ttl_seconds: int,
                     replaces: str = "") -> NewKey:
        self._check_tenant(tenant)
        if not self._admitted_tenant(tenant):
            raise KeyAdminError("invalid_argument", "tenant: not in tenants.registry and "
                                "tenants.allow_unknown is off: the key could never be used")
        if len(name) > _MAX_NAME or not name.isprintable():
            raise KeyAdminError("invalid_argument",
                                f"name: at most {_MAX_NAME} printable characters")
        if len(scopes) > _MAX_SCOPES or not all(_SCOPE.fullmatch(s) for s in scopes):
            raise KeyAdminError("invalid_argument",
                            "scopes: printable ASCII words without spaces, quotes or backslashes")
        _check_duration("ttl_seconds", ttl_seconds, minimum=0)
        now = int(time.time())
        key_id, secret = new_key_id(), new_secret()
        record = KeyRecord(key_id=key_id, tenant=tenant, name=name,
                           scopes=tuple(dict.fromkeys(scopes)),
                           digest=self._keys.hasher.digest(key_id, secret), created_at=now,
                           expires_at=now + ttl_seconds if ttl_seconds else 0, replaces=replaces,
                           lifetime=ttl_seconds)
        await self._store.put(record)
        self._keys.invalidate(key_id)  # a negative cache entry for this id would hide it here
        return NewKey(record, format_key(self._keys.prefix, key_id, secret))

    async def get(self, key_id: str, *, lenient: bool = False) -> KeyRecord:
        """`lenient`: a record a hand edit left with bytes that are not UTF-8 is read with
        U+FFFD in their place; otherwise it is refused (failed_precondition)."""
        try:
            record = await self._store.get(key_id, lenient=lenient) if key_id.isalnum() else None
        except UnreadableKeyRecord:
            raise KeyAdminError("failed_precondition", "the stored record is not UTF-8 (a hand "
                                "edit?): fix or delete it in Redis, or revoke it") from None
        if record is None:
            raise KeyAdminError("not_found", "no such key")
        return record

    async def list(self, tenant: str, include_revoked: bool,
                   page_token: str = "") -> list[KeyRecord]:
        """The tenant's keys, oldest first, after `page_token` (see page_token()). Only keys
        that still work unless `include_revoked`: rotated-out keys expire but stay stored, and
        soon outnumber the working ones."""
        self._check_tenant(tenant)
        after = _parse_page_token(page_token)
        now = time.time()
        return [r for r in await self._store.list(tenant)
                if (include_revoked or not (r.revoked or r.expired(now)))
                and (after is None or (r.created_at, r.key_id) > after)]

    async def rotate(self, key_id: str, overlap_seconds: int) -> tuple[NewKey, KeyRecord]:
        """A new key with the old one's tenant, name and scopes; the old one expires after the
        overlap, so callers switch over without a moment where neither works."""
        _check_duration("overlap_seconds", overlap_seconds, minimum=NO_OVERLAP)
        old = await self.get(key_id)
        if old.revoked or old.expired(time.time()):
            raise KeyAdminError("invalid_argument", "key is revoked or expired: create a new one")
        overlap = self._overlap(overlap_seconds)
        # The old key's own lifetime, not expires_at - created_at: a rotation shortened that.
        new = await self.create(old.tenant, old.name, list(old.scopes),
                                ttl_seconds=old.lifetime, replaces=old.key_id)
        old_expiry = int(time.time()) + overlap
        if old.expires_at:
            old_expiry = min(old_expiry, old.expires_at)
        await self._store.update(old, expires_at=old_expiry)
        self._keys.invalidate(old.key_id)
        # A revoke that ran beside this rotation must not leave the revoked key a working
        # successor: look again now that the successor exists (a revoke after this look is
        # one of the old key after its rotation, which leaves the successor, as it should).
        current = await self._store.get(old.key_id)
        if current is None or current.revoked:
            await self.revoke(new.record.key_id)
            raise KeyAdminError("invalid_argument", "key was revoked during the rotation: its "
                                "replacement is revoked too")
        return new, current

    async def revoke(self, key_id: str) -> KeyRecord:
        try:
            record, broken = await self.get(key_id), False
        except KeyAdminError as refusal:
            if refusal.code != "failed_precondition":
                raise
            # A leaked key whose record a hand edit broke must still be revocable (checks
            # refuse it meanwhile), or rewriting the field later would bring it back to life.
            # Its revoked_at is written afresh: the broken bytes may be that very field.
            record, broken = await self.get(key_id, lenient=True), True
        if broken or not record.revoked:
            record = await self._store.update(record, revoked_at=int(time.time()))
        self._keys.invalidate(key_id)  # this replica at once; the others via pub/sub
        return record

    async def usage(self, tenant: str) -> Usage:
        self._check_tenant(tenant)
        await self._keys.flush_usage()  # this replica's counts are current at least
        return await self._store.usage(tenant)

    def _overlap(self, overlap_seconds: int) -> int:
        if overlap_seconds == NO_OVERLAP:
            return 0  # expires_at = now: expired() is true from this second on
        # Rounded up, as the CLI does: int() made a configured 500ms no overlap at all.
        return overlap_seconds or math.ceil(self._keys.cfg.rotate_overlap)

    def _check_tenant(self, tenant: str) -> None:
        if not self._valid_tenant(tenant):
            raise KeyAdminError("invalid_argument", "tenant: not a valid tenant id")


def page_token(last: KeyRecord) -> str:
    """Where the next page of a listing starts: after this record, in (created_at, key id)
    order, so none is listed twice. A key created while a listing pages may sort before the
    token (the same second, a random id; a replica's clock behind) and be missed: list again."""
    return f"{last.created_at}.{last.key_id}"


def _parse_page_token(token: str) -> tuple[int, str] | None:
    if not token:
        return None
    created_at, _, key_id = token.partition(".")
    if not (_PAGE_TOKEN_SECONDS.fullmatch(created_at) and _KEY_ID.fullmatch(key_id)):
        raise KeyAdminError("invalid_argument", "page_token: not a token ListKeys returned")
    return int(created_at), key_id


def _check_duration(field: str, seconds: int, minimum: int) -> None:
    """Refused before anything is written: an out-of-range value must not leave a record."""
    if seconds < minimum:
        allowed = "-1 (none), 0 (the default) or positive" if minimum < 0 else "not negative"
        raise KeyAdminError("invalid_argument", f"{field}: must be {allowed}")
    if seconds > MAX_LIFETIME_SECONDS:
        raise KeyAdminError("invalid_argument",
                            f"{field}: at most {MAX_LIFETIME_SECONDS} (10 years)")
