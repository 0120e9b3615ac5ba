"""Machines: added once their datacenter watches them, changed, checked and removed."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncEngine

from abiquo_central.db import tables
from abiquo_central.db.paging import PageRequest
from abiquo_central.events import Actor
from abiquo_central.infrastructure import machines, racks
from abiquo_central.infrastructure.datacenters import DatacenterAway
from abiquo_central.infrastructure.machines import MachineChange, MachineState, from_discovered
from abiquo_central.link import DatacenterUnavailable
from abiquo_dc.protocol.definitions import Credentials
from abiquo_dc.protocol.monitoring import StopMonitoringHost
from abiquo_runtime.errors import Conflict, InvalidInput, NotFound
from abiquo_runtime.secrets import SecretBox
from tests.central.conftest import T0, FakeClock
from tests.central.infrastructure.test_discovery import (
    FakeDatacenter,
    calls_for,
    fake_dc,
    host,
    live_dc,
)

__all__ = ["fake_dc", "live_dc"]

ACTOR = Actor(user_id=1, nick="admin", enterprise_id=1)
LIVENESS = 15.0


@pytest.fixture
async def rack(engine: AsyncEngine, live_dc: int) -> int:
    made = await racks.create_rack(engine, live_dc, racks.RackSpec(name="r1"), actor=ACTOR, now=T0)
    return made.id


def spec(address: str = "10.0.0.2", password: str | None = "s3cret") -> machines.MachineSpec:
    found = from_discovered(host(address), user="root")
    return replace(
        found,
        password=password,
        virtual_switch="eth1",
        datastores=(replace(found.datastores[0], enabled=True), found.datastores[1]),
    )


async def _create(
    engine: AsyncEngine,
    fake: FakeDatacenter,
    secrets: SecretBox,
    clock: FakeClock,
    dc: int,
    rack: int,
    made: machines.MachineSpec,
) -> machines.Machine:
    return await machines.create_machine(
        engine,
        calls_for(fake),
        dc,
        rack,
        made,
        actor=ACTOR,
        secrets=secrets,
        now=clock(),
        liveness_timeout=LIVENESS,
    )


async def test_created_once_watched(
    engine: AsyncEngine,
    fake_dc: FakeDatacenter,
    secrets: SecretBox,
    clock: FakeClock,
    live_dc: int,
    rack: int,
) -> None:
    made = await _create(engine, fake_dc, secrets, clock, live_dc, rack, spec())
    assert (made.name, made.ip, made.type, made.state, made.cpu, made.ram) == (
        "host-10.0.0.2",
        "10.0.0.2",
        "KVM",
        "MANAGED",
        8,
        16384,
    )
    assert made.available and made.virtual_switch == "eth1"
    assert [(d.spec.name, d.spec.enabled) for d in made.datastores] == [
        ("ds0", True),
        ("ds1", False),
    ]
    watched = fake_dc.monitored["10.0.0.2"]
    assert watched.credentials == Credentials(user="root", password="s3cret")
    async with engine.connect() as conn:
        secret = (await conn.execute(select(tables.machine.c.password_secret))).scalar_one()
    assert "s3cret" not in secret and secrets.decrypt(secret) == "s3cret"
    with pytest.raises(Conflict) as twice:
        await _create(engine, fake_dc, secrets, clock, live_dc, rack, spec())
    assert twice.value.code == machines.DUPLICATED_IP


async def test_nothing_is_saved_when_the_datacenter_is_away(
    engine: AsyncEngine,
    fake_dc: FakeDatacenter,
    secrets: SecretBox,
    clock: FakeClock,
    live_dc: int,
    rack: int,
) -> None:
    fake_dc.down = True
    with pytest.raises(DatacenterUnavailable):
        await _create(engine, fake_dc, secrets, clock, live_dc, rack, spec())
    fake_dc.down = False
    clock.advance(LIVENESS + 1)
    with pytest.raises(DatacenterAway):
        await _create(engine, fake_dc, secrets, clock, live_dc, rack, spec())
    async with engine.connect() as conn:
        assert (await conn.execute(select(tables.machine.c.id))).first() is None
        assert (await conn.execute(select(tables.datastore.c.id))).first() is None


@pytest.mark.parametrize(
    "change",
    [
        {"virtual_switch": "eth0,eth1"},
        {"virtual_switch": ""},
        {"ip": "10.0.0"},
        {"cpu": 0},
        {"ram": -1},
        {"port": 70000},
        {"name": ""},
        {"datastores": ()},
    ],
)
async def test_invalid_machines_are_refused(change: dict[str, Any]) -> None:
    bad = replace(spec(), **change)
    if change == {"datastores": ()}:
        # No datastore at all is allowed: the allocator only skips such a machine.
        assert machines.validate(bad).datastores == ()
        return
    with pytest.raises(InvalidInput):
        machines.validate(bad)


def test_twice_the_same_datastore_is_refused() -> None:
    one = spec()
    with pytest.raises(InvalidInput):
        machines.validate(replace(one, datastores=(one.datastores[0], one.datastores[0])))


async def test_update_keeps_what_the_allocator_owns(
    engine: AsyncEngine,
    fake_dc: FakeDatacenter,
    secrets: SecretBox,
    clock: FakeClock,
    live_dc: int,
    rack: int,
) -> None:
    made = await _create(engine, fake_dc, secrets, clock, live_dc, rack, spec())
    async with engine.begin() as conn:
        await conn.execute(tables.machine.update().values(cpu_used=2, ram_used=1024))
    calls = calls_for(fake_dc)

    async def update(**fields: Any) -> machines.Machine:
        base: dict[str, Any] = {
            "name": "renamed",
            "description": "d",
            "ip_service": "",
            "user": "root",
            "virtual_switch": "eth0",
            "initiator_iqn": "",
            "cpu": 8,
            "ram": 16384,
        }
        return await machines.update_machine(
            engine,
            calls,
            live_dc,
            rack,
            made.id,
            MachineChange(**{**base, **fields}),
            actor=ACTOR,
            secrets=secrets,
            now=clock(),
            liveness_timeout=LIVENESS,
        )

    sent = len(fake_dc.requests)
    changed = await update(
        datastores=(machines.DatastoreToggle(name="ds1", enabled=True, directory="abq"),)
    )
    assert (changed.name, changed.virtual_switch, changed.cpu_used, changed.ram_used) == (
        "renamed",
        "eth0",
        2,
        1024,
    )
    assert changed.ip_service == "10.0.0.2"
    assert [(d.spec.enabled, d.spec.directory) for d in changed.datastores] == [
        (True, ""),
        (True, "abq"),
    ]
    # Same credentials: the datacenter was not bothered.
    assert len(fake_dc.requests) == sent
    await update(password="n3w")
    assert fake_dc.monitored["10.0.0.2"].credentials.password == "n3w"
    with pytest.raises(InvalidInput) as moved:
        await update(ip="10.0.0.3")
    assert moved.value.code == machines.IDENTITY_CHANGE
    with pytest.raises(Conflict):
        await update(cpu=1)
    with pytest.raises(InvalidInput):
        await update(datastores=(machines.DatastoreToggle(name="nope", enabled=True),))
    fake_dc.down = True
    with pytest.raises(DatacenterUnavailable):
        await update(password="other")
    async with engine.connect() as conn:
        secret = (await conn.execute(select(tables.machine.c.password_secret))).scalar_one()
    assert secrets.decrypt(secret) == "n3w"


async def test_delete(
    engine: AsyncEngine,
    fake_dc: FakeDatacenter,
    secrets: SecretBox,
    clock: FakeClock,
    live_dc: int,
    rack: int,
) -> None:
    one = await _create(engine, fake_dc, secrets, clock, live_dc, rack, spec())
    two = await _create(engine, fake_dc, secrets, clock, live_dc, rack, spec("10.0.0.1", None))
    calls = calls_for(fake_dc)

    async def delete(machine_id: int, force: bool = False) -> None:
        await machines.delete_machine(
            engine,
            calls,
            live_dc,
            rack,
            machine_id,
            actor=ACTOR,
            secrets=secrets,
            now=clock(),
            liveness_timeout=LIVENESS,
            force=force,
        )

    async with engine.begin() as conn:
        await conn.execute(
            tables.machine.update().where(tables.machine.c.id == one.id).values(ram_used=1)
        )
    with pytest.raises(Conflict) as busy:
        await delete(one.id)
    assert busy.value.code == machines.MACHINE_IN_USE

    async def a_vm_arrives() -> None:
        async with engine.begin() as conn:
            await conn.execute(
                tables.machine.update().where(tables.machine.c.id == two.id).values(cpu_used=1)
            )

    fake_dc.hooks[StopMonitoringHost] = a_vm_arrives
    with pytest.raises(Conflict):
        await delete(two.id)
    # It stays, watched again.
    assert fake_dc.monitored["10.0.0.1"].address == "10.0.0.1"
    del fake_dc.hooks[StopMonitoringHost]
    async with engine.begin() as conn:
        await conn.execute(tables.machine.update().values(cpu_used=0))
    await delete(two.id)
    assert isinstance(fake_dc.requests[-1], StopMonitoringHost)
    assert "10.0.0.1" not in fake_dc.monitored
    with pytest.raises(NotFound):
        await delete(two.id)
    async with engine.begin() as conn:
        await conn.execute(tables.machine.update().values(ram_used=0))
    clock.advance(LIVENESS + 1)
    with pytest.raises(DatacenterAway):
        await delete(one.id)
    await delete(one.id, force=True)
    async with engine.connect() as conn:
        assert (await conn.execute(select(tables.machine.c.id))).first() is None
        assert (await conn.execute(select(tables.datastore.c.id))).first() is None


async def test_check_state(
    engine: AsyncEngine,
    fake_dc: FakeDatacenter,
    secrets: SecretBox,
    clock: FakeClock,
    live_dc: int,
    rack: int,
) -> None:
    made = await _create(engine, fake_dc, secrets, clock, live_dc, rack, spec())

    async def check() -> MachineState:
        return await machines.check_machine(
            engine,
            calls_for(fake_dc),
            live_dc,
            rack,
            made.id,
            actor=ACTOR,
            secrets=secrets,
            now=clock(),
            liveness_timeout=LIVENESS,
        )

    assert await check() is MachineState.MANAGED
    fake_dc.passwords["10.0.0.2"] = Credentials(user="root", password="changed")
    assert await check() is MachineState.NOT_MANAGED
    fake_dc.hosts.pop("10.0.0.2")
    assert await check() is MachineState.STOPPED
    got = await machines.get_machine(
        engine, live_dc, rack, made.id, now=clock(), liveness_timeout=LIVENESS
    )
    assert got.state == "STOPPED"


async def test_listing_reads_a_page_in_a_few_queries(
    engine: AsyncEngine,
    fake_dc: FakeDatacenter,
    secrets: SecretBox,
    clock: FakeClock,
    live_dc: int,
    rack: int,
) -> None:
    for n in range(1, 31):
        address = f"10.0.1.{n}"
        fake_dc.add(host(address))
        await _create(engine, fake_dc, secrets, clock, live_dc, rack, spec(address, password=None))
    statements: list[str] = []

    def count(*args: Any) -> None:
        # Not SQLite's BEGIN IMMEDIATE, which only opens the transaction.
        if not str(args[2]).startswith("BEGIN"):
            statements.append(str(args[2]))

    event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        page = await machines.list_machines(
            engine,
            live_dc,
            rack,
            page=PageRequest(startwith=20, limit=25),
            now=clock(),
            liveness_timeout=LIVENESS,
        )
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", count)
    assert page.total == 30 and len(page.items) == 10
    assert all(len(m.datastores) == 2 and m.available for m in page.items)
    assert [m.ip for m in page.items] == [f"10.0.1.{n}" for n in range(21, 31)]
    # The count, the page, its datastores.
    assert len(statements) == 3
    clock.advance(LIVENESS + 1)
    later = await machines.list_machines(
        engine, live_dc, rack, page=PageRequest(), now=clock(), liveness_timeout=LIVENESS
    )
    assert not any(m.available for m in later.items)
