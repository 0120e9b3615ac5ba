"""What an Appliance Manager reports of its repository's file system (RepositoryUsage):
its capacity and free space, kept on the datacenter's row for repositories.py to show.

Reports may be redelivered and reordered, so one measured before the stored one
(`at` earlier than repository_usage_at) changes nothing; the same one again writes the
same figures. A report of a datacenter central does not know (yet: it is registered
once its remote services are) is dropped, as heartbeats are: unlike a template's
report it loses nothing, the next one says it all again, and dead-lettering one a
minute would fill the dead-letter queue for as long as the datacenter is unregistered.
"""

from __future__ import annotations

from datetime import UTC

import structlog
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from abiquo_central.db import tables
from abiquo_dc.protocol.templates import RepositoryUsage

_dc = tables.datacenter
_log = structlog.get_logger("abiquo.central.templates")
# The columns are signed 64-bit.
_MAX_BYTES = 2**63 - 1


def _bytes(value: int) -> int:
    return max(0, min(value, _MAX_BYTES))


async def record_repository_usage(engine: AsyncEngine, message: RepositoryUsage) -> None:
    """Store the datacenter's repository capacity and free space (see the module)."""
    # A naive time can only be the UTC the AM sends.
    at = message.at if message.at.tzinfo is not None else message.at.replace(tzinfo=UTC)
    async with engine.begin() as conn:
        dc_id = (
            await conn.execute(select(_dc.c.id).where(_dc.c.uuid == message.dc_uuid))
        ).scalar_one_or_none()
        if dc_id is None:
            _log.debug("repository usage of an unknown datacenter", dc=message.dc_uuid[:64])
            return
        # Compare-and-set: of two reports applied at once, the later measure stays.
        await conn.execute(
            _dc.update()
            .where(
                _dc.c.id == dc_id,
                or_(_dc.c.repository_usage_at.is_(None), _dc.c.repository_usage_at <= at),
            )
            .values(
                repository_capacity_bytes=_bytes(message.capacity_bytes),
                repository_free_bytes=_bytes(message.free_bytes),
                repository_usage_at=at,
            )
        )
