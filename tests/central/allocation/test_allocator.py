"""The allocator: the right machine and datastore, and never more than a machine holds,
even with two central processes allocating at once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from abiquo_central.allocation import NoRoom, allocate, deallocate
from abiquo_central.allocation.allocator import _candidates, _claim, _need
from abiquo_central.db import tables
from abiquo_central.db.engine import create_engine
from abiquo_central.db.rows import inserted_id
from abiquo_central.infrastructure.datacenters import record_heartbeat
from abiquo_runtime.errors import Conflict
from tests.central.conftest import T0, FakeClock, Seeded

LIVENESS = 15.0
GIB = 1024**3


@dataclass
class Cloud:
    dc: int
    rack: int
    vapp: int
    vdc: int
    template: int
    enterprise: int


async def _insert(engine: AsyncEngine, table: object, **values: object) -> int:
    async with engine.begin() as conn:
        return inserted_id(await conn.execute(table.insert().values(**values)))  # type: ignore[attr-defined]


@pytest.fixture
async def cloud(engine: AsyncEngine, seeded: Seeded, clock: FakeClock) -> Cloud:
    dc_uuid = str(uuid.uuid4())
    dc = await _insert(
        engine, tables.datacenter, uuid=dc_uuid, name="dc", location="", created_at=T0
    )
    await record_heartbeat(
        engine,
        dc_uuid=dc_uuid,
        name="dc",
        sequence=1,
        started_at=T0,
        sent_at=clock(),
        http_url="http://dc",
        services={},
    )
    rack = await _insert(
        engine,
        tables.rack,
        datacenter_id=dc,
        name="r",
        vlan_id_min=2,
        vlan_id_max=4094,
        created_at=T0,
    )
    ent = seeded.enterprise_id
    vdc = await _insert(
        engine,
        tables.virtual_datacenter,
        enterprise_id=ent,
        datacenter_id=dc,
        name="vdc",
        hypervisor_type="KVM",
        created_at=T0,
    )
    vapp = await _insert(
        engine, tables.virtual_appliance, vdc_id=vdc, enterprise_id=ent, name="va", created_at=T0
    )
    template = await _insert(
        engine,
        tables.virtual_machine_template,
        enterprise_id=ent,
        datacenter_id=dc,
        ovf_id="t",
        ovf_key="t",
        name="t",
        state="DOWNLOAD",
        created_at=T0,
    )
    return Cloud(dc=dc, rack=rack, vapp=vapp, vdc=vdc, template=template, enterprise=ent)


async def machine(
    engine: AsyncEngine,
    cloud: Cloud,
    ip: str,
    *,
    cpu: int = 4,
    ram: int = 4096,
    type: str = "KVM",
    stores: tuple[tuple[int, bool], ...] = ((100 * GIB, True),),
    reserved_for: int | None = None,
) -> int:
    made = await _insert(
        engine,
        tables.machine,
        datacenter_id=cloud.dc,
        rack_id=cloud.rack,
        name=ip,
        ip=ip,
        type=type,
        state="MANAGED",
        cpu=cpu,
        ram=ram,
        reserved_enterprise_id=reserved_for,
        created_at=T0,
    )
    for i, (size, enabled) in enumerate(stores):
        await _insert(
            engine,
            tables.datastore,
            machine_id=made,
            name=f"ds{i}",
            root_path=f"/ds{i}",
            size=size,
            enabled=enabled,
        )
    return made


async def vm(
    engine: AsyncEngine, cloud: Cloud, *, cpu: int = 1, ram: int = 512, hd: int = GIB
) -> int:
    vm_uuid = str(uuid.uuid4())
    return await _insert(
        engine,
        tables.virtual_machine,
        uuid=vm_uuid,
        vapp_id=cloud.vapp,
        vdc_id=cloud.vdc,
        enterprise_id=cloud.enterprise,
        template_id=cloud.template,
        name=f"ABQ_{vm_uuid}",
        label="vm",
        cpu=cpu,
        ram=ram,
        hd_bytes=hd,
        state="NOT_ALLOCATED",
        created_at=T0,
        updated_at=T0,
    )


async def usage(engine: AsyncEngine) -> dict[int, tuple[int, int, int, int]]:
    m = tables.machine
    async with engine.connect() as conn:
        rows = await conn.execute(select(m.c.id, m.c.cpu_used, m.c.ram_used, m.c.cpu, m.c.ram))
        return {r.id: (r.cpu_used, r.ram_used, r.cpu, r.ram) for r in rows}


async def test_the_machine_with_most_free_ram_and_its_roomiest_datastore(
    engine: AsyncEngine, cloud: Cloud, clock: FakeClock
) -> None:
    await machine(engine, cloud, "10.0.0.1", ram=2048)
    big = await machine(
        engine,
        cloud,
        "10.0.0.2",
        ram=8192,
        stores=((10 * GIB, True), (50 * GIB, True), (90 * GIB, False)),
    )
    one = await vm(engine, cloud, hd=2 * GIB)
    got = await allocate(engine, one, now=clock(), liveness_timeout=LIVENESS)
    assert (got.machine_id, got.vdrp_ip, got.vdrp_port) == (big, "10.0.0.2", 5900)
    ds = tables.datastore
    async with engine.connect() as conn:
        chosen = (
            await conn.execute(select(ds.c.name, ds.c.used_size).where(ds.c.id == got.datastore_id))
        ).one()
        state = (
            await conn.execute(
                select(tables.virtual_machine.c.state).where(tables.virtual_machine.c.id == one)
            )
        ).scalar_one()
    assert (chosen.name, chosen.used_size, state) == ("ds1", 2 * GIB, "ALLOCATED")
    assert (await usage(engine))[big][:2] == (1, 512)
    second = await allocate(engine, await vm(engine, cloud), now=clock(), liveness_timeout=LIVENESS)
    assert second.vdrp_port == 5901

    with pytest.raises(Conflict):
        await allocate(engine, one, now=clock(), liveness_timeout=LIVENESS)
    await deallocate(engine, one)
    assert (await usage(engine))[big][:2] == (1, 512)
    async with engine.connect() as conn:
        back = (
            await conn.execute(
                select(tables.virtual_machine.c.state, tables.virtual_machine.c.machine_id).where(
                    tables.virtual_machine.c.id == one
                )
            )
        ).one()
    assert tuple(back) == ("NOT_ALLOCATED", None)


async def test_what_does_not_fit_is_not_chosen(
    engine: AsyncEngine, cloud: Cloud, clock: FakeClock, seeded: Seeded
) -> None:
    await machine(engine, cloud, "10.0.0.1", cpu=1)  # too few CPUs
    await machine(engine, cloud, "10.0.0.2", type="VMX_04", cpu=64)  # another type
    await machine(engine, cloud, "10.0.0.3", cpu=64, stores=((100 * GIB, False),))  # disabled
    await machine(engine, cloud, "10.0.0.4", cpu=64, stores=((GIB // 2, True),))  # small disk
    one = await vm(engine, cloud, cpu=2)
    with pytest.raises(NoRoom):
        await allocate(engine, one, now=clock(), liveness_timeout=LIVENESS)
    fits = await machine(engine, cloud, "10.0.0.5", cpu=64)
    got = await allocate(engine, one, now=clock(), liveness_timeout=LIVENESS)
    assert got.machine_id == fits


async def test_reservations_and_liveness(
    engine: AsyncEngine, cloud: Cloud, clock: FakeClock, seeded: Seeded
) -> None:
    other = await _insert(
        engine, tables.enterprise, name="Other", is_reservation_restricted=False, created_at=T0
    )
    theirs = await machine(engine, cloud, "10.0.0.1", ram=65536, reserved_for=other)
    ours = await machine(engine, cloud, "10.0.0.2", ram=1024, reserved_for=cloud.enterprise)
    free = await machine(engine, cloud, "10.0.0.3", ram=4096)
    got = await allocate(engine, await vm(engine, cloud), now=clock(), liveness_timeout=LIVENESS)
    assert got.machine_id == free  # the most free RAM among those it may use
    assert theirs not in (got.machine_id,)
    async with engine.begin() as conn:
        await conn.execute(
            tables.enterprise.update()
            .where(tables.enterprise.c.id == cloud.enterprise)
            .values(is_reservation_restricted=True)
        )
    got = await allocate(engine, await vm(engine, cloud), now=clock(), liveness_timeout=LIVENESS)
    assert got.machine_id == ours
    # The datacenter falls silent: nothing of it is allocated.
    clock.advance(LIVENESS + 1)
    with pytest.raises(NoRoom):
        await allocate(engine, await vm(engine, cloud), now=clock(), liveness_timeout=LIVENESS)


@pytest.fixture
async def second_process(db_url: str) -> AsyncIterator[AsyncEngine]:
    """Another central process's engine on the same database."""
    other = create_engine(db_url, pool_size=5, echo=False)
    yield other
    await other.dispose()


@pytest.mark.mariadb
@pytest.mark.parametrize("database", ["mariadb"], indirect=True)
async def test_two_processes_never_over_commit(
    engine: AsyncEngine, second_process: AsyncEngine, cloud: Cloud, clock: FakeClock
) -> None:
    machines = [await machine(engine, cloud, f"10.0.1.{i}", cpu=4, ram=4096) for i in range(10)]
    vms = [await vm(engine, cloud, cpu=1, ram=1024) for _ in range(50)]

    async def one(i: int, vm_id: int) -> int | None:
        process = engine if i % 2 else second_process
        try:
            got = await allocate(process, vm_id, now=clock(), liveness_timeout=LIVENESS)
        except NoRoom:
            return None
        return got.machine_id

    placed = await asyncio.gather(*(one(i, v) for i, v in enumerate(vms)))
    assert sum(p is not None for p in placed) == 40
    used = await usage(engine)
    assert all(used[m] == (4, 4096, 4, 4096) for m in machines)
    vmt = tables.virtual_machine
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(vmt.c.machine_id, vmt.c.vdrp_port).where(vmt.c.machine_id.is_not(None))
            )
        ).all()
    assert len(rows) == 40 and len(set(rows)) == 40


@pytest.mark.mariadb
@pytest.mark.parametrize("database", ["mariadb"], indirect=True)
async def test_claims_on_two_machines_do_not_wait_for_each_other(
    engine: AsyncEngine, second_process: AsyncEngine, cloud: Cloud, clock: FakeClock
) -> None:
    """A claim in progress on one machine holds no lock another machine's claim needs:
    a locking read of the VMs by machine locked the index's gaps, where the other claim
    inserts its VM, and two such claims deadlocked each other."""
    small = await machine(engine, cloud, "10.0.2.1", ram=2048)
    large = await machine(engine, cloud, "10.0.2.2", ram=4096)
    here, there = await vm(engine, cloud, ram=512), await vm(engine, cloud, ram=4096)
    async with engine.connect() as conn:
        need = await _need(conn, here)
        candidates = await _candidates(conn, need, now=clock(), liveness_timeout=LIVENESS)
    on_small = next(c for c in candidates if c.id == small)
    async with engine.begin() as conn:
        await _claim(conn, need, on_small)
        # Uncommitted yet: the other process allocates on the other machine meanwhile.
        async with asyncio.timeout(5):
            got = await allocate(second_process, there, now=clock(), liveness_timeout=LIVENESS)
        assert got.machine_id == large
    used = await usage(engine)
    assert used[small][:2] == (1, 512) and used[large][:2] == (1, 4096)
