"""The VM definition central sends with a task: its NICs as its machine carries them."""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from abiquo_central.db import tables
from abiquo_central.tasks.plans import TaskType
from abiquo_runtime.secrets import SecretBox
from tests.central.allocation.test_allocator import Cloud, _insert, cloud, machine, vm
from tests.central.conftest import FakeClock
from tests.central.tasks.test_lifecycle import _sent_task, _start

__all__ = ["cloud"]


async def test_a_nic_carries_its_vlan_and_the_machines_virtual_switch(
    engine: AsyncEngine, cloud: Cloud, clock: FakeClock, secrets: SecretBox
) -> None:
    host = await machine(engine, cloud, "10.0.0.1")
    async with engine.begin() as conn:
        m = tables.machine
        await conn.execute(update(m).where(m.c.id == host).values(virtual_switch="bond0"))
    one = await vm(engine, cloud)
    vlan = await _insert(
        engine,
        tables.vlan,
        vdc_id=cloud.vdc,
        datacenter_id=cloud.dc,
        name="default",
        tag=7,
        address="192.168.0.0",
        mask=24,
        gateway="192.168.0.1",
    )
    await _insert(
        engine,
        tables.ip,
        vlan_id=vlan,
        ip="192.168.0.2",
        mac="52:54:00:00:00:02",
        virtual_machine_id=one,
        nic_order=0,
    )
    await _start(engine, one, TaskType.DEPLOY, secrets, clock)
    _, sent = await _sent_task(engine, clock)
    [nic] = sent.jobs[0].definition.nics
    assert (nic.mac, nic.ip, nic.vlan_tag, nic.network_name, nic.virtual_switch) == (
        "52:54:00:00:00:02",
        "192.168.0.2",
        7,
        "default",
        "bond0",
    )
