"""Which virtual datacenters a caller may reach, and looking one up within that reach.

Everything under a VDC (its networks, appliances and machines) is reached through it, so
this is the one place tenant isolation and a user's restriction to some VDCs are decided:
a VDC out of reach is NotFound, exactly as one that does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Row, select, true
from sqlalchemy.ext.asyncio import AsyncConnection

from abiquo_central.db import tables
from abiquo_runtime.errors import NotFound

VDC_NOT_FOUND = "VDC-0"

_vdc = tables.virtual_datacenter


@dataclass(frozen=True, slots=True)
class Scope:
    """The VDCs a caller may reach: those of `enterprise_id` (every enterprise's when
    None) and, when `vdcs` is not empty, only those among them."""

    enterprise_id: int | None
    vdcs: frozenset[int] = frozenset()

    def condition(self) -> ColumnElement[bool]:
        """A WHERE clause on virtual_datacenter keeping the reachable rows."""
        clause: ColumnElement[bool] = true()
        if self.enterprise_id is not None:
            clause = clause & (_vdc.c.enterprise_id == self.enterprise_id)
        if self.vdcs:
            clause = clause & _vdc.c.id.in_(sorted(self.vdcs))
        return clause

    def reaches(self, enterprise_id: int, vdc_id: int) -> bool:
        return (self.enterprise_id is None or enterprise_id == self.enterprise_id) and (
            not self.vdcs or vdc_id in self.vdcs
        )


EVERYTHING = Scope(enterprise_id=None)


def vdc_not_found() -> NotFound:
    return NotFound("The requested virtual datacenter does not exist", code=VDC_NOT_FOUND)


async def fetch_vdc_row(
    conn: AsyncConnection, vdc_id: int, scope: Scope, *, for_update: bool = False
) -> Row[Any]:
    """The virtual_datacenter row `vdc_id`; NotFound when absent or out of `scope`'s reach."""
    query = select(_vdc).where(_vdc.c.id == vdc_id, scope.condition())
    if for_update:
        query = query.with_for_update()
    row = (await conn.execute(query)).one_or_none()
    if row is None:
        raise vdc_not_found()
    return row
