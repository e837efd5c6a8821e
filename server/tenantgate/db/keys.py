"""Adding, activating, retiring and syncing the context keys Postgres verifies with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class KeyRow:
    key_id: str
    state: str
    fingerprint: str


def add_key(conn: Any, key_id: str, secret: bytes, activate: bool = True) -> str:
    with conn.transaction():
        row = conn.execute("SELECT tenantgate.add_key(%s, %s, %s)",
                           [key_id, secret, activate]).fetchone()
    return str(row[0])


def activate_key(conn: Any, key_id: str) -> str:
    with conn.transaction():
        return str(conn.execute("SELECT tenantgate.activate_key(%s)", [key_id]).fetchone()[0])


def retire_key(conn: Any, key_id: str) -> str:
    with conn.transaction():
        return str(conn.execute("SELECT tenantgate.retire_key(%s)", [key_id]).fetchone()[0])


def list_keys(conn: Any) -> list[KeyRow]:
    rows = conn.execute("SELECT key_id, state, fingerprint FROM tenantgate.list_keys()")
    return [KeyRow(*row) for row in rows.fetchall()]


def sync_keys(conn: Any, ring: dict[str, bytes]) -> list[tuple[str, str]]:
    """Make Postgres accept exactly the keys of tenantgate's ring: add or activate every key in
    `ring`, retire every accepted or pending key that is not in it. One transaction."""
    changes: list[tuple[str, str]] = []
    with conn.transaction():
        for key_id, secret in ring.items():
            outcome = conn.execute("SELECT tenantgate.add_key(%s, %s, true)",
                                   [key_id, secret]).fetchone()[0]
            changes.append((key_id, str(outcome)))
        for row in list_keys(conn):
            if row.key_id not in ring and row.state != "retired":
                conn.execute("SELECT tenantgate.retire_key(%s)", [row.key_id])
                changes.append((row.key_id, "retired"))
    return changes
