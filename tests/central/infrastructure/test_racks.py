"""Racks: validation of their VLAN ranges, and creating, changing and removing them."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from abiquo_central.db import tables
from abiquo_central.db.paging import PageRequest
from abiquo_central.events import Actor
from abiquo_central.infrastructure import racks
from abiquo_central.infrastructure.datacenters import ensure_datacenter
from abiquo_runtime.errors import Conflict, InvalidInput, NotFound
from tests.central.conftest import T0

ACTOR = Actor(user_id=1, nick="admin", enterprise_id=1)


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        ("", ""),
        ("5", "5"),
        ("10-20,5", "5, 10-20"),
        (" 7 , 5,6, 30-40, 35-50 ,", "5-7, 30-50"),
        ("100-100", "100"),
    ],
)
def test_avoided_vlans_are_normalised(text: str, normal: str) -> None:
    assert racks.normalise_avoided(text, 2, 4094) == normal


@pytest.mark.parametrize(
    "text", ["a", "5-", "-5", "1-2-3", "20-10", "1", "4095", "5,,x", "99999999"]
)
def test_malformed_avoided_vlans_are_refused(text: str) -> None:
    with pytest.raises(InvalidInput) as error:
        racks.validate(racks.RackSpec(name="r", vlans_id_avoided=text))
    assert error.value.code == racks.INVALID_VLANS


@pytest.mark.parametrize(
    "spec",
    [
        racks.RackSpec(name=" "),
        racks.RackSpec(name="x" * 256),
        racks.RackSpec(name="r", vlan_id_min=-1),
        racks.RackSpec(name="r", vlan_id_min=10, vlan_id_max=9),
        racks.RackSpec(name="r", vlan_id_max=4095),
        racks.RackSpec(name="r", nrsq=101),
        racks.RackSpec(name="r", nrsq=-1),
        racks.RackSpec(name="r", vlan_per_vdc_reserved=-1),
        racks.RackSpec(name="r", short_description="x" * 256),
    ],
)
def test_invalid_racks_are_refused(spec: racks.RackSpec) -> None:
    with pytest.raises(InvalidInput):
        racks.validate(spec)


def test_defaults_are_abiquos() -> None:
    spec = racks.validate(racks.RackSpec(name=" r1 "))
    assert (spec.name, spec.vlan_id_min, spec.vlan_id_max) == ("r1", 2, 4094)


async def test_crud(engine: AsyncEngine) -> None:
    dc = await ensure_datacenter(engine, uuid="u1", name="dc", location="", now=T0)
    other = await ensure_datacenter(engine, uuid="u2", name="dc2", location="", now=T0)
    created = await racks.create_rack(
        engine, dc, racks.RackSpec(name="r1", vlans_id_avoided="9,7-8"), actor=ACTOR, now=T0
    )
    assert created.spec.vlans_id_avoided == "7-9"
    assert await racks.get_rack(engine, dc, created.id) == created
    with pytest.raises(NotFound) as elsewhere:
        await racks.get_rack(engine, other, created.id)
    assert elsewhere.value.code == racks.RACK_NOT_FOUND
    with pytest.raises(NotFound) as no_dc:
        await racks.get_rack(engine, 999, created.id)
    assert no_dc.value.code == "DC-0"
    # The same name is fine in another datacenter, not in the same one.
    await racks.create_rack(engine, other, racks.RackSpec(name="r1"), actor=ACTOR, now=T0)
    with pytest.raises(Conflict):
        await racks.create_rack(engine, dc, racks.RackSpec(name="r1"), actor=ACTOR, now=T0)
    second = await racks.create_rack(engine, dc, racks.RackSpec(name="r2"), actor=ACTOR, now=T0)
    with pytest.raises(Conflict):
        await racks.update_rack(engine, dc, second.id, racks.RackSpec(name="r1"), actor=ACTOR)
    changed = await racks.update_rack(
        engine, dc, second.id, racks.RackSpec(name="r3", ha_enabled=True), actor=ACTOR
    )
    assert changed.spec.ha_enabled
    page = await racks.list_racks(engine, dc, page=PageRequest(by="name", asc=False))
    assert [r.spec.name for r in page.items] == ["r3", "r1"] and page.total == 2
    await racks.delete_rack(engine, dc, second.id, actor=ACTOR)
    with pytest.raises(NotFound):
        await racks.get_rack(engine, dc, second.id)
    ev = tables.event
    async with engine.connect() as conn:
        actions = (
            (
                await conn.execute(
                    select(ev.c.action).where(ev.c.component == "RACK").order_by(ev.c.id)
                )
            )
            .scalars()
            .all()
        )
    assert actions == ["RACK_CREATE", "RACK_CREATE", "RACK_CREATE", "RACK_MODIFY", "RACK_DELETE"]


async def test_a_rack_with_machines_stays(engine: AsyncEngine) -> None:
    dc = await ensure_datacenter(engine, uuid="u1", name="dc", location="", now=T0)
    rack = await racks.create_rack(engine, dc, racks.RackSpec(name="r1"), actor=ACTOR, now=T0)
    async with engine.begin() as conn:
        await conn.execute(
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
    with pytest.raises(Conflict) as refused:
        await racks.delete_rack(engine, dc, rack.id, actor=ACTOR)
    assert refused.value.code == racks.RACK_IN_USE
