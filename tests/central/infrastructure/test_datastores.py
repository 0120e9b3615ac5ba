"""Datastores of a machine: added by hand, changed and removed."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from abiquo_central.db import tables
from abiquo_central.events import Actor
from abiquo_central.infrastructure import datastores, racks
from abiquo_central.infrastructure.datacenters import ensure_datacenter
from abiquo_central.infrastructure.datastores import DatastoreChange, DatastoreSpec
from abiquo_runtime.errors import Conflict, InvalidInput, NotFound
from tests.central.conftest import T0

ACTOR = Actor(user_id=1, nick="admin", enterprise_id=1)


@pytest.fixture
async def machine(engine: AsyncEngine) -> tuple[int, int, int]:
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


@pytest.mark.parametrize(
    "spec",
    [
        DatastoreSpec(name="", root_path="/a"),
        DatastoreSpec(name="a", root_path=" "),
        DatastoreSpec(name="a", root_path="/a", size=-1),
        DatastoreSpec(name="a", root_path="/a", size=1, used_size=2),
        DatastoreSpec(name="a", root_path="/" + "a" * 1024),
    ],
)
def test_invalid_datastores_are_refused(spec: DatastoreSpec) -> None:
    with pytest.raises(InvalidInput):
        datastores.validate(spec)


async def test_crud(engine: AsyncEngine, machine: tuple[int, int, int]) -> None:
    dc, rack, m = machine
    made = await datastores.create_datastore(
        engine,
        dc,
        rack,
        m,
        DatastoreSpec(name=" nfs ", root_path="/mnt/nfs", size=10),
        actor=ACTOR,
    )
    assert (made.spec.name, made.spec.enabled) == ("nfs", False)
    with pytest.raises(Conflict):
        await datastores.create_datastore(
            engine, dc, rack, m, DatastoreSpec(name="nfs", root_path="/x"), actor=ACTOR
        )
    other = await datastores.create_datastore(
        engine, dc, rack, m, DatastoreSpec(name="local", root_path="/var"), actor=ACTOR
    )
    changed = await datastores.update_datastore(
        engine,
        dc,
        rack,
        m,
        made.id,
        DatastoreChange(name="nfs2", directory="vm", enabled=True),
        actor=ACTOR,
    )
    assert (changed.spec.name, changed.spec.directory, changed.spec.enabled) == (
        "nfs2",
        "vm",
        True,
    )
    assert changed.spec.root_path == "/mnt/nfs" and changed.spec.size == 10
    with pytest.raises(Conflict):
        await datastores.update_datastore(
            engine,
            dc,
            rack,
            m,
            other.id,
            DatastoreChange(name="nfs2", directory="", enabled=True),
            actor=ACTOR,
        )
    assert [d.spec.name for d in await datastores.list_datastores(engine, dc, rack, m)] == [
        "nfs2",
        "local",
    ]
    await datastores.delete_datastore(engine, dc, rack, m, other.id, actor=ACTOR)
    with pytest.raises(NotFound) as gone:
        await datastores.get_datastore(engine, dc, rack, m, other.id)
    assert gone.value.code == datastores.DATASTORE_NOT_FOUND
    with pytest.raises(NotFound) as no_machine:
        await datastores.list_datastores(engine, dc, rack, m + 1)
    assert no_machine.value.code == "MACHINE-0"
    with pytest.raises(NotFound) as no_rack:
        await datastores.list_datastores(engine, dc, rack + 1, m)
    assert no_rack.value.code == "RACK-0"
    ev = tables.event
    async with engine.connect() as conn:
        actions = (
            (
                await conn.execute(
                    select(ev.c.action).where(ev.c.action.like("DATASTORE%")).order_by(ev.c.id)
                )
            )
            .scalars()
            .all()
        )
    assert actions == [
        "DATASTORE_CREATE",
        "DATASTORE_CREATE",
        "DATASTORE_MODIFY",
        "DATASTORE_DELETE",
    ]
