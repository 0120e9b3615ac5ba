"""A VM's life through the API: deploy, state changes, undeploy, each a task followed
by the datacenter's job notifications."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from xml.etree import ElementTree as ET

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from abiquo_central.db import tables
from abiquo_central.infrastructure.datacenters import record_heartbeat
from abiquo_central.tasks.lifecycle import apply_notification
from abiquo_central.tasks.outbox import OutboxRelay
from abiquo_dc.protocol import jobs as dc
from abiquo_dc.protocol.messages import Message
from tests.central.api.test_vms import Client, _post, _setup
from tests.central.cloud.helpers import api_path, json_of, link_of, template_link
from tests.central.conftest import ADMIN, T0, USER, FakeClock, Seeded

TASK_JSON = "application/vnd.abiquo.task+json"
VM_JSON = "application/vnd.abiquo.virtualmachine+json"
STATE_JSON = "application/vnd.abiquo.virtualmachinestate+json"


async def _live(engine: AsyncEngine, clock: FakeClock, dc_id: int) -> None:
    """The datacenter heard from now, and its machine with an enabled datastore."""
    dc_table, m = tables.datacenter, tables.machine
    async with engine.begin() as conn:
        uuid = (
            await conn.execute(select(dc_table.c.uuid).where(dc_table.c.id == dc_id))
        ).scalar_one()
        machine_id = (
            await conn.execute(select(m.c.id).where(m.c.datacenter_id == dc_id))
        ).scalar_one()
        await conn.execute(
            tables.datastore.insert().values(
                machine_id=machine_id,
                name="ds",
                root_path="/var/lib/virt",
                size=1 << 40,
                enabled=True,
            )
        )
    await record_heartbeat(
        engine,
        dc_uuid=uuid,
        name="dc",
        sequence=1,
        started_at=T0,
        sent_at=clock(),
        http_url="http://dc",
        services={},
    )


async def _sent(engine: AsyncEngine, clock: FakeClock) -> tuple[str, dc.VirtualFactoryTask]:
    sent: list[tuple[str, Message]] = []

    async def send(dc_uuid: str, service: str, message: Message) -> None:
        # Only tasks: the VSM subscriptions go on the rpc queue.
        if service == "virtualfactory":
            sent.append((dc_uuid, message))

    await OutboxRelay(engine, send, clock=clock).drain()
    # The next task starts a second later (the listing is newest first).
    clock.advance(1)
    [(dc_uuid, message)] = sent
    assert isinstance(message, dc.VirtualFactoryTask)
    return dc_uuid, message


async def _done(engine: AsyncEngine, dc_uuid: str, task: dc.VirtualFactoryTask) -> None:
    for job in task.jobs:
        for state in (dc.JobState.START, dc.JobState.DONE):
            await apply_notification(
                engine,
                dc.JobNotification(
                    dc_uuid=dc_uuid,
                    task_id=task.task_id,
                    job_id=job.id,
                    job_type=job.type,
                    vm_uuid=job.definition.uuid,
                    state=state,
                    at=datetime.now(UTC),
                ),
                now=datetime.now(UTC),
            )


async def _state(api: Client, vm: dict[str, Any]) -> str:
    got = await api.get(api_path(link_of(vm, "edit")), headers=ADMIN)
    return str((await json_of(got, 200))["state"])


async def _accepted(response: Any) -> str:
    body = await json_of(response, 202)
    [status] = [link for link in body["links"] if link["rel"] == "status"]
    return str(status["href"])


async def test_a_vm_deployed_switched_off_on_and_undeployed(
    api: Client, engine: AsyncEngine, seeded: Seeded, clock: FakeClock
) -> None:
    infra, _, vapp = await _setup(api, engine, seeded.enterprise_id)
    await _live(engine, clock, infra.dc_id)
    vm = await json_of(
        await _post(api, vapp, {"label": "web", "links": [template_link(infra)]}), 201
    )
    vm_path = api_path(link_of(vm, "edit"))

    status = await _accepted(await api.post(f"{vm_path}/action/deploy", headers=ADMIN))
    task = await json_of(
        await api.get(api_path(status), headers={**ADMIN, "Accept": TASK_JSON}), 200
    )
    assert (task["type"], task["state"], task["ownerId"]) == ("DEPLOY", "PENDING", vm["uuid"])
    assert [j["type"] for j in task["jobs"]["collection"]] == ["CONFIGURE", "POWER_ON"]
    assert await _state(api, vm) == "LOCKED"
    # Locked: another action is refused.
    assert (await api.post(f"{vm_path}/action/reset", headers=ADMIN)).status == 409

    dc_uuid, sent = await _sent(engine, clock)
    assert sent.task_id == task["taskId"]
    await _done(engine, dc_uuid, sent)
    assert await _state(api, vm) == "ON"
    task = await json_of(await api.get(api_path(status), headers=ADMIN), 200)
    assert task["state"] == "FINISHED_SUCCESSFULLY"
    # Deployed: it links to the machine it runs on.
    running = await json_of(await api.get(vm_path, headers=ADMIN), 200)
    machine = await json_of(
        await api.get(api_path(link_of(running, "machine")), headers=ADMIN), 200
    )
    assert machine["cpuUsed"] == running["cpu"]

    off = await api.put(
        f"{vm_path}/state", json={"state": "OFF"}, headers={**ADMIN, "Content-Type": STATE_JSON}
    )
    await _accepted(off)
    dc_uuid, sent = await _sent(engine, clock)
    assert [j.type for j in sent.jobs] == [dc.JobType.POWER_OFF]
    await _done(engine, dc_uuid, sent)
    assert await _state(api, vm) == "OFF"
    paused = await api.put(
        f"{vm_path}/state", json={"state": "PAUSED"}, headers={**ADMIN, "Content-Type": STATE_JSON}
    )
    assert paused.status == 409
    bad = await api.put(
        f"{vm_path}/state", json={"state": "FLYING"}, headers={**ADMIN, "Content-Type": STATE_JSON}
    )
    assert bad.status == 400

    await _accepted(await api.post(f"{vm_path}/action/undeploy", headers=ADMIN))
    dc_uuid, sent = await _sent(engine, clock)
    assert [j.type for j in sent.jobs] == [dc.JobType.DECONFIGURE]
    await _done(engine, dc_uuid, sent)
    assert await _state(api, vm) == "NOT_ALLOCATED"

    listed = await json_of(await api.get(f"{vm_path}/tasks", headers=ADMIN), 200)
    assert [t["type"] for t in listed["collection"]] == ["UNDEPLOY", "POWER_OFF", "DEPLOY"]
    xml = await api.get(
        f"{vm_path}/tasks", headers={**ADMIN, "Accept": "application/vnd.abiquo.tasks+xml"}
    )
    root = ET.fromstring(await xml.read())
    assert root.tag == "tasks" and len(root.findall("task")) == 3


async def test_no_room_is_409_and_changes_nothing(
    api: Client, engine: AsyncEngine, seeded: Seeded, clock: FakeClock
) -> None:
    infra, _, vapp = await _setup(api, engine, seeded.enterprise_id)
    # No heartbeat: the datacenter is away, no machine of it is a candidate.
    vm = await json_of(
        await _post(api, vapp, {"label": "web", "links": [template_link(infra)]}), 201
    )
    vm_path = api_path(link_of(vm, "edit"))
    response = await api.post(f"{vm_path}/action/deploy", headers=ADMIN)
    assert response.status == 409
    assert (await json_of(response, 409))["collection"][0]["code"] == "SCHEDULER-1"
    assert await _state(api, vm) == "NOT_ALLOCATED"


async def test_an_appliance_deployed_and_undeployed_as_a_whole(
    api: Client, engine: AsyncEngine, seeded: Seeded, clock: FakeClock
) -> None:
    infra, _, vapp = await _setup(api, engine, seeded.enterprise_id)
    await _live(engine, clock, infra.dc_id)
    for label in ("web", "db"):
        await json_of(
            await _post(api, vapp, {"label": label, "links": [template_link(infra)]}), 201
        )
    vapp_path = api_path(link_of(vapp, "edit"))

    deployed = await json_of(await api.post(f"{vapp_path}/action/deploy", headers=ADMIN), 202)
    assert [link["rel"] for link in deployed["links"]] == ["status", "status"]
    state = await json_of(await api.get(f"{vapp_path}/state", headers=ADMIN), 200)
    assert state["state"] == "LOCKED"
    # Nothing left to deploy: 409.
    assert (await api.post(f"{vapp_path}/action/deploy", headers=ADMIN)).status == 409

    sent: list[tuple[str, dc.VirtualFactoryTask]] = []

    async def send(dc_uuid: str, service: str, message: Message) -> None:
        if isinstance(message, dc.VirtualFactoryTask):
            sent.append((dc_uuid, message))

    await OutboxRelay(engine, send, clock=clock).drain()
    assert len(sent) == 2
    for dc_uuid, task in sent:
        await _done(engine, dc_uuid, task)
    state = await json_of(await api.get(f"{vapp_path}/state", headers=ADMIN), 200)
    assert state["state"] == "DEPLOYED"

    await json_of(await api.post(f"{vapp_path}/action/undeploy", headers=ADMIN), 202)
    sent.clear()
    await OutboxRelay(engine, send, clock=clock).drain()
    for dc_uuid, task in sent:
        assert [j.type for j in task.jobs] == [dc.JobType.POWER_OFF, dc.JobType.DECONFIGURE]
        await _done(engine, dc_uuid, task)
    state = await json_of(await api.get(f"{vapp_path}/state", headers=ADMIN), 200)
    assert state["state"] == "NOT_DEPLOYED"


async def test_a_deployed_vm_reconfigured_when_off(
    api: Client, engine: AsyncEngine, seeded: Seeded, clock: FakeClock
) -> None:
    infra, _, vapp = await _setup(api, engine, seeded.enterprise_id)
    await _live(engine, clock, infra.dc_id)
    vm = await json_of(
        await _post(api, vapp, {"label": "web", "links": [template_link(infra)]}), 201
    )
    vm_path = api_path(link_of(vm, "edit"))
    await _accepted(await api.post(f"{vm_path}/action/deploy", headers=ADMIN))
    dc_uuid, sent = await _sent(engine, clock)
    await _done(engine, dc_uuid, sent)
    vm = await json_of(await api.get(vm_path, headers=ADMIN), 200)
    # ON: a deployed VM is reconfigured only when off.
    changed = {**vm, "cpu": vm["cpu"] + 2, "ram": vm["ram"] + 512}
    put = await api.put(vm_path, json=changed, headers={**ADMIN, "Content-Type": VM_JSON})
    assert put.status == 409
    off = await api.put(
        f"{vm_path}/state", json={"state": "OFF"}, headers={**ADMIN, "Content-Type": STATE_JSON}
    )
    await _accepted(off)
    dc_uuid, sent = await _sent(engine, clock)
    await _done(engine, dc_uuid, sent)

    await _accepted(
        await api.put(vm_path, json=changed, headers={**ADMIN, "Content-Type": VM_JSON})
    )
    dc_uuid, sent = await _sent(engine, clock)
    [job] = sent.jobs
    assert job.type is dc.JobType.RECONFIGURE
    assert job.previous is not None and job.previous.cpu == vm["cpu"]
    assert job.definition.cpu == vm["cpu"] + 2
    # It fails on the hypervisor: central puts the old values back.
    await apply_notification(
        engine,
        dc.JobNotification(
            dc_uuid=dc_uuid,
            task_id=sent.task_id,
            job_id=job.id,
            job_type=job.type,
            vm_uuid=vm["uuid"],
            state=dc.JobState.FAILED,
            error_code="HV-FAILED",
            at=datetime.now(UTC),
        ),
        now=datetime.now(UTC),
    )
    back = await json_of(await api.get(vm_path, headers=ADMIN), 200)
    assert (back["state"], back["cpu"], back["ram"]) == ("OFF", vm["cpu"], vm["ram"])

    await _accepted(
        await api.put(vm_path, json=changed, headers={**ADMIN, "Content-Type": VM_JSON})
    )
    dc_uuid, sent = await _sent(engine, clock)
    await _done(engine, dc_uuid, sent)
    done = await json_of(await api.get(vm_path, headers=ADMIN), 200)
    assert (done["state"], done["cpu"], done["ram"]) == (
        "CONFIGURED",
        vm["cpu"] + 2,
        vm["ram"] + 512,
    )
    machine = tables.machine
    async with engine.connect() as conn:
        used = (
            await conn.execute(
                select(machine.c.cpu_used, machine.c.ram_used).where(
                    machine.c.datacenter_id == infra.dc_id
                )
            )
        ).one()
    assert tuple(used) == (vm["cpu"] + 2, vm["ram"] + 512)


async def test_an_administrator_recovers_a_stuck_vm(
    api: Client, engine: AsyncEngine, seeded: Seeded, clock: FakeClock
) -> None:
    infra, _, vapp = await _setup(api, engine, seeded.enterprise_id)
    await _live(engine, clock, infra.dc_id)
    vm = await json_of(
        await _post(api, vapp, {"label": "web", "links": [template_link(infra)]}), 201
    )
    vm_path = api_path(link_of(vm, "edit"))
    await _accepted(await api.post(f"{vm_path}/action/deploy", headers=ADMIN))
    # The datacenter never answers. A tenant may not decide for it...
    refused = await api.post(
        f"{vm_path}/action/recover", params={"outcome": "failed"}, headers=USER
    )
    assert refused.status == 403
    bad = await api.post(f"{vm_path}/action/recover", params={"outcome": "maybe"}, headers=ADMIN)
    assert bad.status == 400
    # ...an administrator does.
    task = await json_of(
        await api.post(f"{vm_path}/action/recover", params={"outcome": "failed"}, headers=ADMIN),
        200,
    )
    assert (task["type"], task["state"]) == ("DEPLOY", "FINISHED_UNSUCCESSFULLY")
    assert await _state(api, vm) == "NOT_ALLOCATED"
    nothing = await api.post(f"{vm_path}/action/recover", params={"outcome": "done"}, headers=ADMIN)
    assert nothing.status == 409


async def test_deploys_stay_within_the_limits(
    api: Client, engine: AsyncEngine, seeded: Seeded, clock: FakeClock
) -> None:
    infra, _, vapp = await _setup(api, engine, seeded.enterprise_id)
    await _live(engine, clock, infra.dc_id)
    ent = tables.enterprise
    async with engine.begin() as conn:
        await conn.execute(ent.update().where(ent.c.id == seeded.enterprise_id).values(cpu_hard=3))
    made = [
        await json_of(
            await _post(api, vapp, {"label": f"vm{i}", "links": [template_link(infra)]}), 201
        )
        for i in range(2)
    ]
    first, second = (api_path(link_of(vm, "edit")) for vm in made)
    assert made[0]["cpu"] == 2
    await _accepted(await api.post(f"{first}/action/deploy", headers=ADMIN))
    # Two more CPUs would make 4, past the hard limit of 3: refused, nothing held.
    refused = await api.post(f"{second}/action/deploy", headers=ADMIN)
    assert refused.status == 409
    assert (await json_of(refused, 409))["collection"][0]["code"] == "LIMIT-7"
    assert await _state(api, made[1]) == "NOT_ALLOCATED"

    async with engine.begin() as conn:
        await conn.execute(
            ent.update().where(ent.c.id == seeded.enterprise_id).values(cpu_hard=0, cpu_soft=3)
        )
    soft = await api.post(f"{second}/action/deploy", headers=ADMIN)
    assert (await json_of(soft, 409))["collection"][0]["code"] == "LIMIT-8"
    forced = await api.post(
        f"{second}/action/deploy",
        json={"forceEnterpriseSoftLimits": True},
        headers={**ADMIN, "Content-Type": "application/vnd.abiquo.virtualmachinetask+json"},
    )
    await _accepted(forced)
    ev = tables.event
    async with engine.connect() as conn:
        warned = (
            (await conn.execute(select(ev.c.severity).where(ev.c.action == "SOFT_LIMIT_EXCEEDED")))
            .scalars()
            .all()
        )
    assert warned == ["WARNING"]
