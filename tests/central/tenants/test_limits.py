"""An enterprise's limits per datacenter, and its locations, on SQLite and on MariaDB."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from abiquo_central.db import tables
from abiquo_central.db.paging import PageRequest
from abiquo_central.events import Actor
from abiquo_central.infrastructure.datacenters import ensure_datacenter
from abiquo_central.tenants import limits
from abiquo_central.tenants.enterprises import INVALID_LIMITS, Limits
from abiquo_central.tenants.seed import ensure_enterprise
from abiquo_runtime.errors import Conflict, InvalidInput, NotFound
from tests.central.conftest import T0, Seeded


@pytest.fixture
def actor(seeded: Seeded) -> Actor:
    return Actor(user_id=seeded.user_id, nick="jdoe", enterprise_id=seeded.enterprise_id)


@pytest.fixture
async def dcs(engine: AsyncEngine) -> tuple[int, int]:
    one = await ensure_datacenter(engine, uuid="dc-1", name="Barcelona", location="ES", now=T0)
    two = await ensure_datacenter(engine, uuid="dc-2", name="Madrid", location="ES", now=T0)
    return one, two


async def _actions(engine: AsyncEngine) -> list[tuple[str, str, int | None]]:
    ev = tables.event
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(ev.c.action, ev.c.target, ev.c.datacenter_id).order_by(ev.c.id)
        )
        return [(r.action, r.target, r.datacenter_id) for r in rows]


async def test_create_read_update_delete_records_events(
    engine: AsyncEngine, seeded: Seeded, actor: Actor, dcs: tuple[int, int]
) -> None:
    ent, (bcn, _) = seeded.enterprise_id, dcs
    created = await limits.create_limit(
        engine, ent, bcn, Limits(cpu_soft=4, cpu_hard=8, hd_hard=2**40), actor=actor
    )
    assert (created.enterprise_id, created.datacenter_id, created.datacenter_name) == (
        ent,
        bcn,
        "Barcelona",
    )
    assert await limits.get_limit(engine, ent, created.id) == created
    changed = await limits.update_limit(
        engine, ent, created.id, Limits(ram_soft=512), actor=actor, datacenter_id=bcn
    )
    assert changed.limits == Limits(ram_soft=512) and changed.datacenter_id == bcn
    assert (await limits.get_limit(engine, ent, created.id)).limits == Limits(ram_soft=512)
    await limits.delete_limit(engine, ent, created.id, actor=actor)
    with pytest.raises(NotFound) as gone:
        await limits.get_limit(engine, ent, created.id)
    assert gone.value.code == limits.LIMIT_NOT_FOUND
    target = f"/admin/enterprises/{ent}/limits/{created.id}"
    assert await _actions(engine) == [
        ("ENTERPRISE_LIMIT_CREATE", target, bcn),
        ("ENTERPRISE_LIMIT_MODIFY", target, bcn),
        ("ENTERPRISE_LIMIT_DELETE", target, bcn),
    ]


async def test_one_limit_per_enterprise_and_datacenter(
    engine: AsyncEngine, seeded: Seeded, actor: Actor, dcs: tuple[int, int]
) -> None:
    ent, (bcn, mad) = seeded.enterprise_id, dcs
    await limits.create_limit(engine, ent, bcn, Limits(), actor=actor)
    with pytest.raises(Conflict) as dup:
        await limits.create_limit(engine, ent, bcn, Limits(cpu_hard=1), actor=actor)
    assert dup.value.code == limits.DUPLICATED_LIMIT
    # Another datacenter, or another enterprise in the same one, is fine.
    await limits.create_limit(engine, ent, mad, Limits(), actor=actor)
    other = await ensure_enterprise(engine, "Other", now=T0)
    await limits.create_limit(engine, other, bcn, Limits(), actor=actor)


async def test_validation_is_the_enterprises(
    engine: AsyncEngine, seeded: Seeded, actor: Actor, dcs: tuple[int, int]
) -> None:
    ent, (bcn, _) = seeded.enterprise_id, dcs
    for bad in (Limits(cpu_soft=9, cpu_hard=8), Limits(vlans_hard=-1), Limits(ram_soft=2**31)):
        with pytest.raises(InvalidInput) as refused:
            await limits.create_limit(engine, ent, bcn, bad, actor=actor)
        assert refused.value.code == INVALID_LIMITS
    made = await limits.create_limit(engine, ent, bcn, Limits(cpu_soft=9), actor=actor)
    with pytest.raises(InvalidInput):
        await limits.update_limit(engine, ent, made.id, Limits(hd_soft=2, hd_hard=1), actor=actor)


async def test_the_datacenter_cannot_change(
    engine: AsyncEngine, seeded: Seeded, actor: Actor, dcs: tuple[int, int]
) -> None:
    ent, (bcn, mad) = seeded.enterprise_id, dcs
    made = await limits.create_limit(engine, ent, bcn, Limits(), actor=actor)
    with pytest.raises(InvalidInput) as moved:
        await limits.update_limit(engine, ent, made.id, Limits(), actor=actor, datacenter_id=mad)
    assert moved.value.code == limits.LOCATION_IMMUTABLE


async def test_unknown_datacenter_or_enterprise_is_not_found(
    engine: AsyncEngine, seeded: Seeded, actor: Actor, dcs: tuple[int, int]
) -> None:
    with pytest.raises(NotFound) as no_dc:
        await limits.create_limit(engine, seeded.enterprise_id, 999_999, Limits(), actor=actor)
    assert no_dc.value.code == "DC-0"
    with pytest.raises(NotFound) as no_ent:
        await limits.create_limit(engine, 999_999, dcs[0], Limits(), actor=actor)
    assert no_ent.value.code == "EN-0"
    assert await _actions(engine) == []


async def test_another_enterprise_is_invisible(
    engine: AsyncEngine, seeded: Seeded, actor: Actor, dcs: tuple[int, int]
) -> None:
    other = await ensure_enterprise(engine, "Other", now=T0)
    theirs = await limits.create_limit(engine, other, dcs[0], Limits(), actor=actor)
    mine = seeded.enterprise_id
    with pytest.raises(NotFound):
        await limits.get_limit(engine, other, theirs.id, visible_to=mine)
    with pytest.raises(NotFound):
        await limits.list_limits(engine, other, page=PageRequest(), visible_to=mine)
    # Nor is it reachable under one's own enterprise.
    with pytest.raises(NotFound):
        await limits.get_limit(engine, mine, theirs.id, visible_to=mine)


async def test_listing_filters_and_pages(
    engine: AsyncEngine, seeded: Seeded, actor: Actor, dcs: tuple[int, int]
) -> None:
    ent, (bcn, mad) = seeded.enterprise_id, dcs
    a = await limits.create_limit(engine, ent, bcn, Limits(), actor=actor)
    b = await limits.create_limit(engine, ent, mad, Limits(), actor=actor)
    every = await limits.list_limits(engine, ent, page=PageRequest())
    assert ([x.id for x in every.items], every.total) == ([a.id, b.id], 2)
    in_madrid = await limits.list_limits(engine, ent, page=PageRequest(), datacenter_id=mad)
    assert [x.id for x in in_madrid.items] == [b.id]
    by_name = await limits.list_limits(engine, ent, page=PageRequest(has="celo"))
    assert [x.id for x in by_name.items] == [a.id]
    desc = await limits.list_limits(
        engine, ent, page=PageRequest(by="datacenter", asc=False, limit=1)
    )
    assert ([x.id for x in desc.items], desc.total) == ([b.id], 2)


async def test_locations_are_the_datacenters_with_limits(
    engine: AsyncEngine, seeded: Seeded, actor: Actor, dcs: tuple[int, int]
) -> None:
    ent, (bcn, mad) = seeded.enterprise_id, dcs
    assert (await limits.list_locations(engine, ent, page=PageRequest())).total == 0
    other = await ensure_enterprise(engine, "Other", now=T0)
    await limits.create_limit(engine, other, mad, Limits(), actor=actor)
    await limits.create_limit(engine, ent, bcn, Limits(), actor=actor)
    found = await limits.list_locations(engine, ent, page=PageRequest())
    assert list(found.items) == [limits.Location(id=bcn, name="Barcelona", location="ES")]
    assert await limits.get_location(engine, ent, bcn) == found.items[0]
    with pytest.raises(NotFound) as hidden:
        await limits.get_location(engine, ent, mad)
    assert hidden.value.code == limits.LOCATION_NOT_FOUND
