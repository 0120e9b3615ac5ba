"""An enterprise's repository in a datacenter: where its Appliance Manager keeps the
enterprise's templates.

An enterprise's repositories are those of the datacenters it may use (it has limits in
them, as its locations); a caller that administers every enterprise reaches the
repository of any datacenter, to look after what enterprises keep there.

Capacity and remaining space are those of the file system the datacenter's repository
lives on (the NFS share every enterprise's repository there shares), in MiB, as its
Appliance Manager last reported them (RepositoryUsage, recorded by repository_usage.py):
at its start, every minute or so, and after templates come or go. Until the datacenter
has reported, both are 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, and_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from abiquo_central.db import tables
from abiquo_central.templates.common import NO_APPLIANCE_MANAGER, repository_not_found
from abiquo_central.tenants.enterprises import get_enterprise
from abiquo_runtime.errors import Conflict

_dc = tables.datacenter
_rs = tables.remote_service
_lim = tables.enterprise_limit
MIB = 1024**2


@dataclass(frozen=True, slots=True)
class Repository:
    enterprise_id: int
    datacenter_id: int
    datacenter_name: str
    datacenter_uuid: str | None
    # The datacenter's APPLIANCE_MANAGER remote service (…/am); None when unregistered.
    am_uri: str | None
    capacity_mb: int = 0
    remaining_mb: int = 0

    def appliance_manager(self) -> str:
        """The AM's URI; Conflict (AM-4) when the datacenter has none registered."""
        if not self.am_uri:
            raise Conflict(
                f"Datacenter {self.datacenter_name} has no APPLIANCE_MANAGER remote service",
                code=NO_APPLIANCE_MANAGER,
            )
        return self.am_uri


def _select(enterprise_id: int, any_datacenter: bool) -> Select[Any]:
    query = select(
        _dc.c.id,
        _dc.c.name,
        _dc.c.uuid,
        _dc.c.repository_capacity_bytes,
        _dc.c.repository_free_bytes,
        _rs.c.uri,
    ).outerjoin(_rs, and_(_rs.c.datacenter_id == _dc.c.id, _rs.c.type == "APPLIANCE_MANAGER"))
    if not any_datacenter:
        query = query.where(
            _dc.c.id.in_(select(_lim.c.datacenter_id).where(_lim.c.enterprise_id == enterprise_id))
        )
    return query.order_by(_dc.c.name, _dc.c.id)


async def _rows(
    conn: AsyncConnection, enterprise_id: int, any_datacenter: bool, dc_id: int | None = None
) -> list[Repository]:
    query = _select(enterprise_id, any_datacenter)
    if dc_id is not None:
        query = query.where(_dc.c.id == dc_id)
    return [
        Repository(
            enterprise_id=enterprise_id,
            datacenter_id=r.id,
            datacenter_name=r.name,
            datacenter_uuid=r.uuid,
            am_uri=r.uri,
            capacity_mb=r.repository_capacity_bytes // MIB,
            remaining_mb=r.repository_free_bytes // MIB,
        )
        for r in (await conn.execute(query)).all()
    ]


async def list_repositories(
    engine: AsyncEngine, enterprise_id: int, *, visible_to: int | None, any_datacenter: bool
) -> list[Repository]:
    """The enterprise's repositories; NotFound when the enterprise is not `visible_to`."""
    await get_enterprise(engine, enterprise_id, visible_to=visible_to)
    async with engine.connect() as conn:
        return await _rows(conn, enterprise_id, any_datacenter)


async def get_repository(
    engine: AsyncEngine,
    enterprise_id: int,
    dc_id: int,
    *,
    visible_to: int | None,
    any_datacenter: bool,
) -> Repository:
    """One repository; NotFound when the enterprise is not `visible_to` or may not use
    the datacenter (unless `any_datacenter`)."""
    await get_enterprise(engine, enterprise_id, visible_to=visible_to)
    async with engine.connect() as conn:
        found = await _rows(conn, enterprise_id, any_datacenter, dc_id)
    if not found:
        raise repository_not_found()
    return found[0]
