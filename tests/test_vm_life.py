"""A virtual machine's whole life, over HTTP only, from an empty database.

Central and a datacenter, each composed as its program composes it, over the real
MariaDB, RabbitMQ and Redis; the KVM host is a real AIM over libvirt's test driver,
sharing the datacenter's template repository (the NFS share of a real installation).
Through the API alone: the infrastructure; an enterprise with limits in the datacenter
and its administrator, who does the rest: a template uploaded to the datacenter's
Appliance Manager, a virtual datacenter, an appliance, a VM from the template; deploy,
power off, an instance of its disk (and a second VM deployed from it), reconfigure,
power on, reset; the domain destroyed behind the platform's back, which the
datacenter's VSM sees and central frees; deploy again, undeploy, delete. Each step is
checked on the host's libvirt too.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import aiohttp
import libvirt
import pytest

from abiquo_central.app import Central
from abiquo_dc.app import Datacenter
from abiquo_runtime.shutdown import run_stages
from tests.dc.hypervisors.kvm_host import KvmHost
from tests.e2e_cloud import (
    Api,
    Infrastructure,
    datacenter_process,
    link,
    set_up_infrastructure,
    wait_for,
)
from tests.e2e_cloud import central as central
from tests.e2e_cloud import database_url as database_url
from tests.e2e_cloud import kvm as kvm

pytestmark = [pytest.mark.mariadb, pytest.mark.rabbitmq, pytest.mark.redis]

PASSWORD = "ops-secret"
RUNNING, SHUTOFF = libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_SHUTOFF
TASK_TIMEOUT = 20.0


async def qcow2(path: Path) -> bytes:
    """A small, empty qcow2 disk."""
    process = await asyncio.create_subprocess_exec(
        "qemu-img", "create", "-q", "-f", "qcow2", str(path), "16M"
    )
    assert await process.wait() == 0
    return await asyncio.to_thread(path.read_bytes)


async def domain_state(kvm: KvmHost, vm_uuid: str) -> int | None:
    """The domain's state on the host's libvirt, None when there is no such domain."""

    def look(conn: libvirt.virConnect) -> int | None:
        try:
            return int(conn.lookupByUUIDString(vm_uuid).info()[0])
        except libvirt.libvirtError:
            return None

    return await kvm.libvirt.call(look, kvm.libvirt.conn)


async def domain_size(kvm: KvmHost, vm_uuid: str) -> tuple[int, int]:
    """The domain's virtual CPUs and its memory in MB."""

    def look(conn: libvirt.virConnect) -> tuple[int, int]:
        info = conn.lookupByUUIDString(vm_uuid).info()
        return int(info[3]), int(info[1]) // 1024

    return await kvm.libvirt.call(look, kvm.libvirt.conn)


async def set_state(api: Api, vm: dict[str, Any], wanted: str) -> tuple[int, Any]:
    return await api.call(
        "PUT",
        link(vm, "state"),
        media="virtualmachinestate",
        body={"state": wanted},
        accept="acceptedrequest",
    )


async def destroy_behind_our_back(kvm: KvmHost, vm_uuid: str) -> None:
    def destroy(conn: libvirt.virConnect) -> None:
        dom = conn.lookupByUUIDString(vm_uuid)
        with contextlib.suppress(libvirt.libvirtError):
            dom.destroy()
        dom.undefine()

    await kvm.libvirt.call(destroy, kvm.libvirt.conn)


async def tenant(api: Api, infra: Infrastructure) -> tuple[Api, dict[str, Any]]:
    """An enterprise allowed in the datacenter, and its administrator's API."""
    status, enterprise = await api.call(
        "POST", "/admin/enterprises", media="enterprise", body={"name": "Ops"}
    )
    assert status == 201, enterprise
    status, limit = await api.call(
        "POST",
        f"{link(enterprise, 'edit')}/limits",
        media="limit",
        body={
            "cpuSoft": 8,
            "cpuHard": 16,
            "ramSoft": 8192,
            "ramHard": 16384,
            "links": [{"rel": "location", "href": infra.datacenter_href}],
        },
    )
    assert status == 201, limit
    _, roles = await api.call("GET", "/admin/roles", media="roles", limit="100")
    role = next(r for r in roles["collection"] if r["name"] == "ENTERPRISE_ADMIN")
    status, user = await api.call(
        "POST",
        f"{link(enterprise, 'edit')}/users",
        media="user",
        body={
            "name": "Olga",
            "surname": "Ops",
            "nick": "olga",
            "password": PASSWORD,
            "email": "olga@example.com",
            "links": [{"rel": "role", "href": link(role, "edit")}],
        },
    )
    assert status == 201, user
    return api.as_user("olga", PASSWORD), enterprise


async def upload_template(
    api: Api, http: aiohttp.ClientSession, infra: Infrastructure, enterprise_id: int, disk: bytes
) -> dict[str, Any]:
    """A template uploaded to the datacenter's AM, once central lists it as DOWNLOAD."""
    status, repository = await api.call(
        "GET",
        f"/admin/enterprises/{enterprise_id}/datacenterrepositories/{infra.datacenter_id}",
        media="datacenterrepository",
    )
    assert status == 200, repository
    form = aiohttp.MultipartWriter("form-data")
    info = form.append_json(
        {"name": "tiny", "disk_format": "QCOW2_SPARSE", "cpu": 1, "ram_mb": 256}
    )
    info.set_content_disposition("form-data", name="diskInfo")
    part = form.append(disk, {"Content-Type": "application/octet-stream"})
    part.set_content_disposition("form-data", name="diskFile", filename="tiny.qcow2")
    async with http.post(link(repository, "upload"), data=form) as response:
        assert response.status == 201, await response.text()

    async def listed() -> dict[str, Any] | None:
        _, found = await api.call(
            "GET", link(repository, "virtualmachinetemplates"), media="virtualmachinetemplates"
        )
        return next(
            (t for t in found["collection"] if t["name"] == "tiny" and t["state"] == "DOWNLOAD"),
            None,
        )

    return await wait_for(listed)


async def finished(api: Api, accepted: tuple[int, Any]) -> dict[str, Any]:
    """The task an action started (202), once it is over."""
    status, body = accepted
    assert status == 202, body
    status_href = link(body, "status")

    async def over() -> dict[str, Any] | None:
        _, task = await api.call("GET", status_href, media="task")
        return task if task["state"].startswith("FINISHED") or task["state"] == "ABORTED" else None

    return await wait_for(over, timeout=TASK_TIMEOUT)


async def finished_xml(api: Api, accepted: tuple[int, str]) -> ET.Element:
    """finished() in XML: the acceptedrequest and the task as XML documents."""
    status, text = accepted
    assert status == 202, text
    root = ET.fromstring(text)
    assert root.tag == "acceptedrequest"
    status_href = next(lk.get("href") for lk in root.iter("link") if lk.get("rel") == "status")
    assert status_href is not None

    async def over() -> ET.Element | None:
        _, body = await api.call_xml("GET", status_href, media="task")
        task = ET.fromstring(body)
        state = task.findtext("state") or ""
        return task if state.startswith("FINISHED") or state == "ABORTED" else None

    return await wait_for(over, timeout=TASK_TIMEOUT)


async def machine_usage(admin: Api, infra: Infrastructure) -> tuple[int, int]:
    _, machine = await admin.call("GET", link(infra.machine, "edit"), media="machine")
    return machine["cpuUsed"], machine["ramUsed"]


async def vm_state(api: Api, vm_href: str) -> str:
    _, vm = await api.call("GET", vm_href, media="virtualmachine")
    return str(vm["state"])


async def test_a_virtual_machine_lives_its_whole_life_over_http(
    central: Central, rabbitmq_url: str, redis_prefix: str, kvm: KvmHost, tmp_path: Path
) -> None:
    dc = datacenter_process(tmp_path, rabbitmq_url, redis_prefix, repository=kvm.repository)
    await dc.start()
    running: Datacenter | None = dc
    try:
        async with aiohttp.ClientSession() as http:
            admin = Api(http, f"{central.url}/api")
            infra = await set_up_infrastructure(admin, dc, kvm)
            api, enterprise = await tenant(admin, infra)

            disk = await qcow2(tmp_path / "tiny.qcow2")
            template = await upload_template(api, http, infra, enterprise["id"], disk)

            status, vdc = await api.call(
                "POST",
                "/cloud/virtualdatacenters",
                media="virtualdatacenter",
                body={
                    "name": "vdc",
                    "hypervisorType": "KVM",
                    "links": [
                        {
                            "rel": "location",
                            "href": f"{api.root}/cloud/locations/{infra.datacenter_id}",
                        },
                        {"rel": "enterprise", "href": link(enterprise, "edit")},
                    ],
                },
            )
            assert status == 201, vdc
            status, vapp = await api.call(
                "POST",
                link(vdc, "virtualappliances"),
                media="virtualappliance",
                body={"name": "web"},
            )
            assert status == 201, vapp
            status, vm = await api.call(
                "POST",
                link(vapp, "virtualmachines"),
                media="virtualmachine",
                body={
                    "label": "web-1",
                    "links": [{"rel": "virtualmachinetemplate", "href": link(template, "edit")}],
                },
            )
            assert status == 201, vm
            here = link(vm, "edit")
            assert vm["state"] == "NOT_ALLOCATED"

            # Deploy: configured and powered on, on the host's libvirt too.
            task = await finished(
                api, await api.call("POST", link(vm, "deploy"), media="acceptedrequest")
            )
            assert task["state"] == "FINISHED_SUCCESSFULLY", task
            assert [j["type"] for j in task["jobs"]["collection"]] == ["CONFIGURE", "POWER_ON"]
            assert await vm_state(api, here) == "ON"
            assert await domain_state(kvm, vm["uuid"]) == RUNNING
            # Its disk copied from the repository to the machine's datastore, its NIC on
            # the bridge of its VDC's VLAN, its CPU and RAM counted on the machine.
            assert (kvm.datastore / vm["uuid"]).is_file()
            assert kvm.vlans is not None
            [(tag, parent, bridge)] = kvm.vlans.current
            assert 100 <= tag <= 200 and parent == infra.machine["virtualSwitch"]
            assert bridge == f"abiquo_{tag}"
            assert await machine_usage(admin, infra) == (vm["cpu"], vm["ram"])

            # Power off.
            task = await finished(api, await set_state(api, vm, "OFF"))
            assert task["state"] == "FINISHED_SUCCESSFULLY", task
            assert await vm_state(api, here) == "OFF"
            assert await domain_state(kvm, vm["uuid"]) == SHUTOFF

            # An instance: the disk copied back to the repository, a template of the
            # enterprise whose master is the VM's template; the VM stays OFF.
            task = await finished(
                api,
                await api.call(
                    "POST",
                    link(vm, "instance"),
                    media="virtualmachineinstance",
                    body={"instanceName": "web golden"},
                    accept="acceptedrequest",
                ),
            )
            assert (task["type"], task["state"]) == ("SNAPSHOT", "FINISHED_SUCCESSFULLY"), task
            assert await vm_state(api, here) == "OFF"
            _, instances = await api.call(
                "GET", link(template, "instances"), media="virtualmachinetemplates"
            )
            [instance] = instances["collection"]
            assert (instance["name"], instance["state"]) == ("web golden", "DOWNLOAD")
            assert link(instance, "master") == link(template, "edit")
            assert instance["creationUser"] == "olga"
            copied = kvm.repository / instance["path"]
            assert copied.read_bytes() == (kvm.datastore / vm["uuid"]).read_bytes()

            # A second VM from the instance boots from a copy of the instance's disk.
            status, copy_vm = await api.call(
                "POST",
                link(vapp, "virtualmachines"),
                media="virtualmachine",
                body={
                    "label": "web-2",
                    "links": [{"rel": "virtualmachinetemplate", "href": link(instance, "edit")}],
                },
            )
            assert status == 201, copy_vm
            task = await finished(
                api, await api.call("POST", link(copy_vm, "deploy"), media="acceptedrequest")
            )
            assert task["state"] == "FINISHED_SUCCESSFULLY", task
            assert await domain_state(kvm, copy_vm["uuid"]) == RUNNING
            assert (kvm.datastore / copy_vm["uuid"]).read_bytes() == copied.read_bytes()
            task = await finished(
                api, await api.call("POST", link(copy_vm, "undeploy"), media="acceptedrequest")
            )
            assert task["state"] == "FINISHED_SUCCESSFULLY", task
            status, _ = await api.call("DELETE", link(copy_vm, "edit"), media="virtualmachine")
            assert status == 204

            # Reconfigured while off: CONFIGURED, the domain redefined with the new size.
            _, current = await api.call("GET", here, media="virtualmachine")
            status, accepted = await api.call(
                "PUT",
                here,
                media="virtualmachine",
                body={**current, "cpu": 2, "ram": 384},
                accept="acceptedrequest",
            )
            task = await finished(api, (status, accepted))
            assert (task["type"], task["state"]) == ("RECONFIGURE", "FINISHED_SUCCESSFULLY")
            assert await vm_state(api, here) == "CONFIGURED"
            assert await domain_size(kvm, vm["uuid"]) == (2, 384)
            assert await machine_usage(admin, infra) == (2, 384)

            # Power on.
            task = await finished(api, await set_state(api, vm, "ON"))
            assert task["state"] == "FINISHED_SUCCESSFULLY", task
            assert await vm_state(api, here) == "ON"
            assert await domain_state(kvm, vm["uuid"]) == RUNNING

            task = await finished(
                api, await api.call("POST", link(vm, "reset"), media="acceptedrequest")
            )
            assert (task["type"], task["state"]) == ("RESET", "FINISHED_SUCCESSFULLY"), task
            assert await vm_state(api, here) == "ON"

            # Destroyed behind the platform's back: the VSM sees it, central frees the VM.
            await destroy_behind_our_back(kvm, vm["uuid"])

            async def freed() -> bool:
                return await vm_state(api, here) == "NOT_ALLOCATED"

            await wait_for(freed, timeout=15)
            assert await machine_usage(admin, infra) == (0, 0)
            _, tasks = await api.call("GET", link(vm, "tasks"), media="tasks")
            assert [t["type"] for t in tasks["collection"]] == [
                "RESET",
                "POWER_ON",
                "RECONFIGURE",
                "SNAPSHOT",
                "POWER_OFF",
                "DEPLOY",
            ]

            # Deploy again and undeploy, in XML: the domain gone, and its VLAN.
            task_xml = await finished_xml(
                api, await api.call_xml("POST", link(vm, "deploy"), media="acceptedrequest")
            )
            assert (task_xml.findtext("type"), task_xml.findtext("state")) == (
                "DEPLOY",
                "FINISHED_SUCCESSFULLY",
            )
            _, vm_xml = await api.call_xml("GET", here, media="virtualmachine")
            assert ET.fromstring(vm_xml).findtext("state") == "ON"
            assert await domain_state(kvm, vm["uuid"]) == RUNNING
            task_xml = await finished_xml(
                api,
                await api.call_xml(
                    "POST",
                    link(vm, "undeploy"),
                    media="acceptedrequest",
                    body="<virtualmachinetask><forceUndeploy>false</forceUndeploy>"
                    "</virtualmachinetask>",
                    content="virtualmachinetask",
                ),
            )
            assert task_xml.findtext("state") == "FINISHED_SUCCESSFULLY", ET.tostring(task_xml)
            jobs = [j.findtext("type") for j in task_xml.iter("job")]
            assert jobs == ["POWER_OFF", "DECONFIGURE"]
            assert await vm_state(api, here) == "NOT_ALLOCATED"
            assert await domain_state(kvm, vm["uuid"]) is None
            assert not (kvm.datastore / vm["uuid"]).exists()
            # The VLAN stays on the host (the driver leaves VLANs: others may share them).
            assert {(t, p) for t, p, _ in kvm.vlans.created} == {(tag, parent)}
            assert await machine_usage(admin, infra) == (0, 0)

            # Deleted.
            status, _ = await api.call("DELETE", here, media="virtualmachine")
            assert status == 204
            status, _ = await api.call("GET", here, media="virtualmachine")
            assert status == 404
    finally:
        if running is not None:
            await run_stages(running.shutdown_stages())
