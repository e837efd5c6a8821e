"""The quota stage of a Check: the tenant's plan and endpoint buckets, one store round trip."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tenantgate.decision import Deny

if TYPE_CHECKING:
    from tenantgate.pipeline import CheckState


async def quota_stage(s: CheckState) -> Deny | None:
    """Placeholder until the limiter lands: no quota configured means nothing to enforce."""
    return None
