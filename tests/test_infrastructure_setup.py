"""A whole infrastructure set up over HTTP only, from an empty database.

Central and a datacenter, each composed as its program composes it, over the real
MariaDB, RabbitMQ and Redis. The datacenter simulates VMX_04 hosts and reaches KVM hosts
through their AIM, here one over libvirt's test driver. Through the API alone: the
datacenter with its remote services pointing at the running DC (its template repository
soon showing the size its Appliance Manager measured, and the template it held before
central knew it), a rack, and two machines
discovered by the DC (a simulated ESXi host, and the KVM host), watched by its VSM from
then on. Then the DC stops: its services and machines show unavailable and what needs it
answers 503; it starts again and everything recovers by itself.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from abiquo_central.app import Central
from abiquo_dc.app import Datacenter
from abiquo_dc.settings import AmSettings
from abiquo_runtime.shutdown import run_stages
from tests import services
from tests.dc.hypervisors.kvm_host import KvmHost
from tests.e2e_cloud import (
    SIMULATED,
    Api,
    add_machine,
    create_datacenter,
    create_rack,
    datacenter_process,
    discover,
    link,
    services_up,
    wait_for,
)
from tests.e2e_cloud import central as central
from tests.e2e_cloud import database_url as database_url
from tests.e2e_cloud import kvm as kvm

pytestmark = [pytest.mark.mariadb, pytest.mark.rabbitmq, pytest.mark.redis]

# The AM's first report goes out before central knows the DC (and is dead-lettered):
# the next one, soon, is the one the repository shows.
AM = AmSettings(usage_interval=0.5)


async def upload_to_am(
    http: aiohttp.ClientSession, dc: Datacenter, enterprise_id: str, disk: Path
) -> None:
    """A template uploaded straight to the DC's Appliance Manager (over its own HTTP
    route, not through central's API)."""
    process = await asyncio.create_subprocess_exec(
        services.require_tool("qemu-img", "qemu-utils"),
        "create",
        "-q",
        "-f",
        "qcow2",
        str(disk),
        "16M",
    )
    assert await process.wait() == 0
    form = aiohttp.MultipartWriter("form-data")
    info = form.append_json({"name": "early", "disk_format": "QCOW2_SPARSE"})
    info.set_content_disposition("form-data", name="diskInfo")
    part = form.append(await asyncio.to_thread(disk.read_bytes))
    part.set_content_disposition("form-data", name="diskFile", filename=disk.name)
    url = f"{dc.server.url}/am/erepos/{enterprise_id}/templates"
    async with http.post(url, data=form) as response:
        assert response.status == 201, await response.text()


async def test_an_infrastructure_set_up_over_http_from_an_empty_database(
    central: Central, rabbitmq_url: str, redis_prefix: str, kvm: KvmHost, tmp_path: Path
) -> None:
    dc = datacenter_process(tmp_path, rabbitmq_url, redis_prefix, am=AM)
    await dc.start()
    running: Datacenter | None = dc
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, f"{central.url}/api")

            # A template in the DC's repository before central knows the DC: what the AM
            # announced then was dropped, and central asks again once it learns the DC.
            _, me = await api.call("GET", "/login", media="user")
            enterprise = link(me, "enterprise")
            await upload_to_am(http, dc, enterprise.rsplit("/", 1)[1], tmp_path / "early.qcow2")

            # The datacenter, with its remote services at the running DC.
            created = await create_datacenter(api, dc)
            here = link(created, "edit")
            rack = await create_rack(api, here)

            # Its template repository: as big as the AM measured it, once it reported.
            repository = f"{enterprise}/datacenterrepositories/{created['id']}"

            async def measured() -> dict[str, Any] | None:
                status, found = await api.call("GET", repository, media="datacenterrepository")
                assert status == 200, found
                return found if found["repositoryCapacityMb"] > 0 else None

            sized = await wait_for(measured, timeout=10)
            assert 0 < sized["repositoryRemainingMb"] <= sized["repositoryCapacityMb"]

            # And holding the template put there before, without a refresh.
            async def early_template() -> dict[str, Any] | None:
                _, found = await api.call(
                    "GET",
                    f"{repository}/virtualmachinetemplates",
                    media="virtualmachinetemplates",
                )
                return next((t for t in found["collection"] if t["name"] == "early"), None)

            early = await wait_for(early_template, timeout=10)
            assert early["state"] == "DOWNLOAD"
            machines_url = link(rack, "machines")

            # Discovered by the DC: the simulated ESXi host and the KVM host's AIM.
            esx = await discover(
                api, here, ip=SIMULATED, hypervisor="VMX_04", user="root", password="esx-secret"
            )
            kvm_machine = await discover(
                api, here, ip=kvm.connection.address, hypervisor="KVM", port=str(kvm.port)
            )
            assert (esx["type"], kvm_machine["type"]) == ("VMX_04", "KVM")
            _, detected = await api.call(
                "GET", f"{here}/action/hypervisor", media="machine", ip=SIMULATED
            )
            assert detected == "VMX_04"

            ids = [
                (await add_machine(api, rack, found, password))["id"]
                for found, password in ((esx, "esx-secret"), (kvm_machine, ""))
            ]

            status, listed = await api.call("GET", machines_url, media="machines")
            assert status == 200
            assert sorted(m["id"] for m in listed["collection"]) == sorted(ids)
            assert all(m["available"] and m["state"] == "MANAGED" for m in listed["collection"])

            # The DC's VSM watches both hosts from now on.
            async with http.get(f"{dc.server.url}/vsm/physicalmachines") as response:
                watched = await response.json(content_type=None)
            text = str(watched)
            assert SIMULATED in text and kvm.connection.address in text

            status, checked = await api.call(
                "GET", f"{machines_url}/{ids[1]}/action/checkstate", media="machinestate"
            )
            assert status == 200, checked
            assert checked["state"] == "MANAGED"

            # The DC goes away: its services and machines show unavailable, and what
            # needs it answers 503.
            await run_stages(dc.shutdown_stages())
            running = None

            async def all_down() -> bool:
                _, found = await api.call("GET", here, media="datacenter")
                _, machines = await api.call("GET", machines_url, media="machines")
                statuses = {rs["status"] for rs in found["remoteServices"]["collection"]}
                return (
                    not found["available"]
                    and statuses == {0}
                    and not any(m["available"] for m in machines["collection"])
                )

            await wait_for(all_down)
            status, refused = await api.call(
                "GET",
                f"{here}/action/discoversingle",
                media="machine",
                ip=SIMULATED,
                hypervisor="VMX_04",
            )
            assert status == 503, refused
            assert refused["collection"][0]["code"] == "DC-1"

            # It comes back (the same state directory: the same uuid): all recovers alone.
            running = datacenter_process(tmp_path, rabbitmq_url, redis_prefix, am=AM)
            await running.start()

            async def all_up() -> bool:
                found = await services_up(api, here)
                _, machines = await api.call("GET", machines_url, media="machines")
                return found is not None and all(m["available"] for m in machines["collection"])

            await wait_for(all_up)
            # Its VSM started with an empty store (a Redis prefix of its own): it said so,
            # and central sent it its hosts again.

            async def watched_again() -> bool:
                assert running is not None
                async with http.get(f"{running.server.url}/vsm/physicalmachines") as response:
                    text = str(await response.json(content_type=None))
                return SIMULATED in text and kvm.connection.address in text

            await wait_for(watched_again)
            status, _ = await api.call(
                "GET",
                f"{here}/action/discoversingle",
                media="machine",
                ip=SIMULATED,
                hypervisor="VMX_04",
            )
            assert status == 200
    finally:
        if running is not None:
            await run_stages(running.shutdown_stages())
