"""Reserved machines: kept for one enterprise at a time."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from abiquo_central.db import tables
from abiquo_central.db.paging import PageRequest
from abiquo_central.events import Actor
from abiquo_central.infrastructure import racks, reservations
from abiquo_central.infrastructure.datacenters import ensure_datacenter
from abiquo_central.tenants.seed import ensure_enterprise
from abiquo_runtime.errors import Conflict, NotFound
from tests.central.conftest import T0

ACTOR = Actor(user_id=1, nick="admin", enterprise_id=1)
NOW = T0


async def _machine(engine: AsyncEngine) -> tuple[int, int, int]:
    dc = await ensure_datacenter(engine, uuid="u1", name="dc", location="", now=T0)
    rack = await racks.create_rack(engine, dc, racks.RackSpec(name="r"), actor=ACTOR, now=T0)
    async with engine.begin() as conn:
        result = await conn.execute(
            tables.machine.insert().values(
                datacenter_id=dc,
                rack_id=rack.id,
                name="m",
                ip="10.0.0.1",
                type="KVM",
                state="MANAGED",
                cpu=1,
                ram=1,
                created_at=T0,
            )
        )
        assert result.inserted_primary_key is not None
    return dc, rack.id, int(result.inserted_primary_key[0])


async def test_reserve_and_release(engine: AsyncEngine) -> None:
    a = await ensure_enterprise(engine, "A", now=T0)
    b = await ensure_enterprise(engine, "B", now=T0)
    dc, rack, m = await _machine(engine)

    async def reserve(ent: int, **kw: object) -> int | None:
        got = await reservations.reserve_machine(
            engine,
            ent,
            m,
            actor=ACTOR,
            now=NOW,
            liveness_timeout=15.0,
            **kw,  # type: ignore[arg-type]
        )
        return got.reserved_enterprise_id

    assert await reserve(a) == a
    assert await reserve(a) == a  # again: nothing changes
    with pytest.raises(Conflict) as taken:
        await reserve(b)
    assert taken.value.code == reservations.RESERVED_BY_ANOTHER
    with pytest.raises(NotFound):
        await reserve(a, where=(dc, rack + 1))
    with pytest.raises(NotFound):
        await reserve(b, visible_to=a)
    listed = await reservations.list_reserved(
        engine, a, page=PageRequest(), now=NOW, liveness_timeout=15.0
    )
    assert [x.id for x in listed.items] == [m] and listed.total == 1
    assert (
        await reservations.list_reserved(
            engine, b, page=PageRequest(), now=NOW, liveness_timeout=15.0
        )
    ).total == 0
    with pytest.raises(NotFound):
        await reservations.release_machine(engine, b, m, actor=ACTOR)
    await reservations.release_machine(engine, a, m, actor=ACTOR)
    with pytest.raises(NotFound):
        await reservations.get_reserved(engine, a, m, now=NOW, liveness_timeout=15.0)
    assert await reserve(b) == b
    ev = tables.event
    async with engine.connect() as conn:
        actions = (
            (
                await conn.execute(
                    select(ev.c.action).where(ev.c.component == "MACHINE").order_by(ev.c.id)
                )
            )
            .scalars()
            .all()
        )
    assert actions == ["MACHINE_RESERVED", "MACHINE_RELEASED", "MACHINE_RESERVED"]
