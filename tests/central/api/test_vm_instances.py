"""A VM's instance through the API: POST .../action/instance starts a SNAPSHOT task
whose DONE, naming the template the datacenter made of the copied disk, records that
template in the repository with the VM's template as its master."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from xml.etree import ElementTree as ET

import msgspec
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from abiquo_central.db import tables
from abiquo_central.link import NoLink
from abiquo_central.notifications import message_handler
from abiquo_central.tasks.lifecycle import apply_notification
from abiquo_central.tasks.reconcile import ask_about_stale
from abiquo_central.templates.reports import record_template_status
from abiquo_dc.protocol import jobs as dc
from abiquo_dc.protocol.definitions import DiskFormat
from abiquo_dc.protocol.templates import (
    TemplateDefinition,
    TemplateStatus,
    TemplateStatusChanged,
)
from abiquo_runtime.secrets import SecretBox
from tests.central.api.test_vm_tasks import _accepted, _done, _live, _sent, _state
from tests.central.api.test_vms import Client, _post, _setup
from tests.central.cloud.helpers import Infra, api_path, json_of, link_of, template_link
from tests.central.conftest import ADMIN, FakeClock, Seeded

INSTANCE_JSON = "application/vnd.abiquo.virtualmachineinstance+json"
INSTANCE_XML = "application/vnd.abiquo.virtualmachineinstance+xml"
STATE_JSON = "application/vnd.abiquo.virtualmachinestate+json"


async def _off_vm(
    api: Client, engine: AsyncEngine, seeded: Seeded, clock: FakeClock
) -> tuple[Infra, dict[str, Any], str]:
    """A VM deployed and powered off: its infrastructure, its representation, its path."""
    infra, _, vapp = await _setup(api, engine, seeded.enterprise_id)
    await _live(engine, clock, infra.dc_id)
    vm = await json_of(
        await _post(api, vapp, {"label": "web", "links": [template_link(infra)]}), 201
    )
    vm_path = api_path(link_of(vm, "edit"))
    await _accepted(await api.post(f"{vm_path}/action/deploy", headers=ADMIN))
    await _done(engine, *await _sent(engine, clock))
    await _accepted(
        await api.put(
            f"{vm_path}/state",
            json={"state": "OFF"},
            headers={**ADMIN, "Content-Type": STATE_JSON},
        )
    )
    await _done(engine, *await _sent(engine, clock))
    assert await _state(api, vm) == "OFF"
    return infra, vm, vm_path


async def _instance(api: Client, vm_path: str, name: str = "golden") -> str:
    """Ask for an instance called `name`: the status link of its task."""
    return await _accepted(
        await api.post(
            f"{vm_path}/action/instance",
            json={"instanceName": name},
            headers={**ADMIN, "Content-Type": INSTANCE_JSON},
        )
    )


def _copy_of(job: dc.Job) -> TemplateDefinition:
    """The template an Appliance Manager makes of the disk the SNAPSHOT job copied."""
    assert job.snapshot is not None
    directory, file_name = job.snapshot.repository_path.split("/")[1:]
    return TemplateDefinition(
        ovf_id=f"{directory}/{file_name}.ovf",
        name=job.snapshot.template_name,
        disk_format=DiskFormat.QCOW2_SPARSE,
        disk_path=job.snapshot.repository_path,
        disk_file_size=5 << 20,
        virtual_size=1 << 30,
        hd_bytes=1 << 30,
    )


def _notification(
    dc_uuid: str,
    task: dc.VirtualFactoryTask,
    state: dc.JobState,
    template: TemplateDefinition | None = None,
    **more: Any,
) -> dc.JobNotification:
    """What the datacenter says of the task's one job."""
    [job] = task.jobs
    return dc.JobNotification(
        dc_uuid=dc_uuid,
        task_id=task.task_id,
        job_id=job.id,
        job_type=job.type,
        vm_uuid=job.definition.uuid,
        state=state,
        template=template,
        **{"at": datetime.now(UTC), **more},
    )


def _templates_path(infra: Infra, enterprise_id: int) -> str:
    return (
        f"/api/admin/enterprises/{enterprise_id}/datacenterrepositories/{infra.dc_id}"
        "/virtualmachinetemplates"
    )


async def _template_ids(api: Client, infra: Infra, enterprise_id: int) -> list[int]:
    listed = await json_of(await api.get(_templates_path(infra, enterprise_id), headers=ADMIN), 200)
    return [t["id"] for t in listed["collection"]]


async def test_an_instance_becomes_a_template_of_the_vms_enterprise(
    api: Client, engine: AsyncEngine, seeded: Seeded, clock: FakeClock
) -> None:
    infra, vm, vm_path = await _off_vm(api, engine, seeded, clock)
    assert link_of(vm, "instance").endswith(f"{vm_path.removeprefix('/api')}/action/instance")

    accepted = await api.post(
        f"{vm_path}/action/instance",
        json={"instanceName": "  golden  "},
        headers={**ADMIN, "Content-Type": INSTANCE_JSON},
    )
    status = await _accepted(accepted)
    task = await json_of(await api.get(api_path(status), headers=ADMIN), 200)
    assert (task["type"], task["state"]) == ("SNAPSHOT", "PENDING")
    assert [j["type"] for j in task["jobs"]["collection"]] == ["SNAPSHOT"]
    assert await _state(api, vm) == "LOCKED"

    # The datacenter is told where the copy goes: a directory of the task's own in the
    # enterprise's repository, and what the template is called.
    dc_uuid, sent = await _sent(engine, clock)
    [job] = sent.jobs
    assert job.type is dc.JobType.SNAPSHOT and job.snapshot is not None
    ent = seeded.enterprise_id
    assert job.snapshot == dc.Snapshot(
        repository_path=f"{ent}/instance-{sent.task_id}/disk",
        disk_index=0,
        enterprise_id=str(ent),
        template_name="golden",
    )

    copy = _copy_of(job)
    await apply_notification(engine, _notification(dc_uuid, sent, dc.JobState.START), now=clock())
    done = _notification(dc_uuid, sent, dc.JobState.DONE, copy)
    await apply_notification(engine, done, now=clock())
    assert await _state(api, vm) == "OFF"
    task = await json_of(await api.get(api_path(status), headers=ADMIN), 200)
    assert task["state"] == "FINISHED_SUCCESSFULLY"

    # The new template: the enterprise's, in the VM's datacenter, linked to its master.
    listed = await json_of(await api.get(_templates_path(infra, ent), headers=ADMIN), 200)
    [instance] = [t for t in listed["collection"] if t["id"] != infra.template_id]
    assert (instance["name"], instance["state"], instance["path"]) == (
        "golden",
        "DOWNLOAD",
        f"{ent}/instance-{sent.task_id}/disk",
    )
    assert instance["diskFormatType"] == "QCOW2_SPARSE"
    assert instance["creationUser"] == "admin"
    # What the VM was: the template's CPU and RAM (test_vms' template: 2 CPUs, 512 MB).
    assert (instance["cpuRequired"], instance["ramRequired"]) == (vm["cpu"], vm["ram"])
    assert instance["hdRequired"] == 1 << 30
    assert link_of(instance, "master").endswith(f"/virtualmachinetemplates/{infra.template_id}")
    master = await json_of(await api.get(api_path(link_of(instance, "master")), headers=ADMIN), 200)
    assert "master" not in {link["rel"] for link in master["links"]}
    instances = await json_of(
        await api.get(api_path(link_of(master, "instances")), headers=ADMIN), 200
    )
    assert [t["id"] for t in instances["collection"]] == [instance["id"]]
    assert instances["totalSize"] == 1

    # The DONE again (a redelivery) and the AM's own report of the same template, which
    # it sent before the DONE: still one template, still the master's instance.
    await apply_notification(engine, done, now=clock())
    await record_template_status(
        engine,
        TemplateStatusChanged(
            dc_uuid=dc_uuid,
            enterprise_id=str(ent),
            ovf_id=copy.ovf_id,
            status=TemplateStatus.DOWNLOAD,
            template=copy,
            at=done.at - timedelta(seconds=1),
        ),
    )
    again = await json_of(await api.get(api_path(link_of(master, "instances")), headers=ADMIN), 200)
    assert [t["id"] for t in again["collection"]] == [instance["id"]]
    tpl = tables.virtual_machine_template
    async with engine.connect() as conn:
        count = (
            await conn.execute(select(func.count()).where(tpl.c.enterprise_id == ent))
        ).scalar_one()
    assert count == 2


async def test_the_am_reporting_first_still_links_the_master(
    api: Client, engine: AsyncEngine, seeded: Seeded, clock: FakeClock
) -> None:
    infra, _vm, vm_path = await _off_vm(api, engine, seeded, clock)
    await _accepted(
        await api.post(
            f"{vm_path}/action/instance",
            data=b"<virtualmachineinstance><instanceName>golden</instanceName>"
            b"</virtualmachineinstance>",
            headers={**ADMIN, "Content-Type": INSTANCE_XML},
        )
    )
    dc_uuid, sent = await _sent(engine, clock)
    copy = _copy_of(sent.jobs[0])
    await record_template_status(
        engine,
        TemplateStatusChanged(
            dc_uuid=dc_uuid,
            enterprise_id=str(seeded.enterprise_id),
            ovf_id=copy.ovf_id,
            status=TemplateStatus.DOWNLOAD,
            template=copy,
            at=datetime.now(UTC) - timedelta(seconds=1),
        ),
    )
    await apply_notification(
        engine, _notification(dc_uuid, sent, dc.JobState.DONE, copy), now=clock()
    )
    xml = await api.get(
        _templates_path(infra, seeded.enterprise_id) + f"/{infra.template_id}/action/instances",
        headers={**ADMIN, "Accept": "application/vnd.abiquo.virtualmachinetemplates+xml"},
    )
    assert xml.status == 200
    root = ET.fromstring(await xml.read())
    assert [t.findtext("name") for t in root.iter("virtualMachineTemplate")] == ["golden"]


async def test_a_template_outside_the_tasks_directory_is_not_recorded(
    api: Client, engine: AsyncEngine, seeded: Seeded, clock: FakeClock
) -> None:
    infra, vm, vm_path = await _off_vm(api, engine, seeded, clock)
    await _instance(api, vm_path)
    dc_uuid, sent = await _sent(engine, clock)
    elsewhere = TemplateDefinition(
        ovf_id="other/disk.ovf",
        name="golden",
        disk_format=DiskFormat.RAW,
        disk_path=f"{seeded.enterprise_id}/other/disk",
        disk_file_size=1,
        virtual_size=1,
    )
    await apply_notification(
        engine, _notification(dc_uuid, sent, dc.JobState.DONE, elsewhere), now=clock()
    )
    # The task is done (the datacenter said so), but no template was taken from it.
    assert await _state(api, vm) == "OFF"
    assert await _template_ids(api, infra, seeded.enterprise_id) == [infra.template_id]


async def test_an_instance_needs_an_off_vm_and_a_name(
    api: Client, engine: AsyncEngine, seeded: Seeded, clock: FakeClock
) -> None:
    _infra, vm, vm_path = await _off_vm(api, engine, seeded, clock)
    headers = {**ADMIN, "Content-Type": INSTANCE_JSON}
    for body in ({"instanceName": "  "}, {}, {"instanceName": "x" * 256}):
        refused = await api.post(f"{vm_path}/action/instance", json=body, headers=headers)
        assert refused.status == 400, body
    assert (await api.post(f"{vm_path}/action/instance", headers=ADMIN)).status in (400, 415)
    # Powered on: 409.
    await _accepted(
        await api.put(
            f"{vm_path}/state",
            json={"state": "ON"},
            headers={**ADMIN, "Content-Type": STATE_JSON},
        )
    )
    await _done(engine, *await _sent(engine, clock))
    on = await api.post(
        f"{vm_path}/action/instance", json={"instanceName": "golden"}, headers=headers
    )
    assert on.status == 409
    assert await _state(api, vm) == "ON"


async def test_a_failed_instance_leaves_the_vm_off_and_no_template(
    api: Client, engine: AsyncEngine, seeded: Seeded, clock: FakeClock
) -> None:
    infra, vm, vm_path = await _off_vm(api, engine, seeded, clock)
    status = await _instance(api, vm_path)
    dc_uuid, sent = await _sent(engine, clock)
    failed = _notification(
        dc_uuid,
        sent,
        dc.JobState.FAILED,
        error_code="HV-STATE",
        error_message="must be off to copy its disks",
    )
    await apply_notification(engine, failed, now=clock())
    task = await json_of(await api.get(api_path(status), headers=ADMIN), 200)
    assert task["state"] == "FINISHED_UNSUCCESSFULLY"
    assert await _state(api, vm) == "OFF"
    assert await _template_ids(api, infra, seeded.enterprise_id) == [infra.template_id]


async def test_a_retried_instance_goes_to_the_same_place(
    api: Client, engine: AsyncEngine, seeded: Seeded, clock: FakeClock
) -> None:
    _infra, _vm, vm_path = await _off_vm(api, engine, seeded, clock)
    await _instance(api, vm_path)
    _, first = await _sent(engine, clock)
    retried = await api.post(
        f"{vm_path}/action/recover", params={"outcome": "retry"}, headers=ADMIN
    )
    assert retried.status == 200
    _, again = await _sent(engine, clock)
    # Same task, same jobs, same destination (a new message id: it is a new message).
    assert (again.task_id, again.jobs) == (first.task_id, first.jobs)


async def test_a_stale_instance_is_settled_unsuccessfully(
    api: Client, engine: AsyncEngine, seeded: Seeded, clock: FakeClock, secrets: SecretBox
) -> None:
    _, vm, vm_path = await _off_vm(api, engine, seeded, clock)
    status = await _instance(api, vm_path)
    await _sent(engine, clock)
    # No news for an hour: a REFRESH sees the VM OFF, as it was before and would be
    # after. That cannot tell whether the copy was made: the task did not succeed.
    later = datetime.now(UTC) + timedelta(hours=1)
    assert await ask_about_stale(engine, secrets=secrets, now=later, stale_after=300) == 1
    dc_uuid, refresh = await _sent(engine, clock)
    assert [j.type for j in refresh.jobs] == [dc.JobType.REFRESH]
    seen = _notification(
        dc_uuid, refresh, dc.JobState.DONE, observed=dc.ObservedState.OFF, at=later
    )
    await apply_notification(engine, seen, now=later)
    task = await json_of(await api.get(api_path(status), headers=ADMIN), 200)
    assert (task["type"], task["state"]) == ("SNAPSHOT", "FINISHED_UNSUCCESSFULLY")
    assert await _state(api, vm) == "OFF"


async def test_the_ams_report_alone_links_an_instance_to_its_master(
    api: Client, engine: AsyncEngine, seeded: Seeded, clock: FakeClock, secrets: SecretBox
) -> None:
    """The SNAPSHOT's DONE never came (the task was settled as stale), but the AM made
    the template and reported it: it is still the master's instance."""
    infra, _, vm_path = await _off_vm(api, engine, seeded, clock)
    await _instance(api, vm_path)
    dc_uuid, sent = await _sent(engine, clock)
    copy = _copy_of(sent.jobs[0])
    handle = message_handler(engine=engine, link=NoLink(), secrets=secrets, request_timeout=5.0)
    report = TemplateStatusChanged(
        dc_uuid=dc_uuid,
        enterprise_id=str(seeded.enterprise_id),
        ovf_id=copy.ovf_id,
        status=TemplateStatus.DOWNLOAD,
        template=copy,
        at=datetime.now(UTC),
    )
    await handle(report)
    await handle(report)
    master = f"{_templates_path(infra, seeded.enterprise_id)}/{infra.template_id}"
    instances = await json_of(await api.get(f"{master}/action/instances", headers=ADMIN), 200)
    [instance] = instances["collection"]
    assert (instance["name"], instance["creationUser"]) == ("golden", "admin")
    # A template elsewhere in the repository, even named like one, is nobody's instance.
    other = msgspec.structs.replace(
        copy, ovf_id="instance-00000000-0000-0000-0000-000000000000/disk.ovf"
    )
    await handle(msgspec.structs.replace(report, ovf_id=other.ovf_id, template=other))
    again = await json_of(await api.get(f"{master}/action/instances", headers=ADMIN), 200)
    assert [t["id"] for t in again["collection"]] == [instance["id"]]
