"""Deploys under stress, end to end: central and a datacenter composed as their programs
compose them, over the real MariaDB, RabbitMQ and Redis, the DC's hosts simulated.

- Fifty VMs deployed at once on ten hosts with room for forty, through two central
  processes on one database and broker: every deploy ends (ON, or refused with the VM
  NOT_ALLOCATED), no machine holds more than it has or other than its VMs, and no two
  NICs share an address.
- The DC stopped in the middle of a deploy and started again 30 s later (the same state
  directory, the same uuid, the same hosts): the deploy ends and no VM stays LOCKED.
- Central gone between the commit that starts a task and the publish of its message:
  the next central sends it from the outbox, and the DC runs it once.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from abiquo_central.api.keys import utc_now
from abiquo_central.app import Central
from abiquo_central.db import tables
from abiquo_central.events import Actor
from abiquo_central.settings import (
    CentralSettings,
    DatabaseSettings,
    DatacentersSettings,
    SecretsSettings,
    TasksSettings,
)
from abiquo_central.tasks.lifecycle import start_task
from abiquo_central.tasks.plans import TaskType
from abiquo_central.tenants.seed import ensure_admin
from abiquo_dc.app import Datacenter, build_datacenter
from abiquo_dc.hypervisors.simulator import SimulatedCloud, SimulatedHost
from abiquo_dc.protocol.definitions import HypervisorType, VirtualMachineDefinition
from abiquo_dc.settings import (
    DatacenterSettings,
    DCSettings,
    RedisSettings,
    RepositorySettings,
    SimulatorSettings,
)
from abiquo_runtime.messaging.amqp import AmqpTransport
from abiquo_runtime.settings import HttpSettings, RabbitSettings, ShutdownSettings
from abiquo_runtime.shutdown import run_stages
from tests.e2e_cloud import (
    Api,
    add_machine,
    create_datacenter,
    create_rack,
    discover,
    link,
    wait_for,
)
from tests.e2e_cloud import database_url as database_url

pytestmark = [pytest.mark.mariadb, pytest.mark.rabbitmq, pytest.mark.redis]

PASSWORD = "ops-secret"
MIB = 1024**2
# Each host has room for four VMs of the template (1 CPU, 256 MB), by CPU and by RAM.
VM_CPU, VM_RAM = 1, 256
HOST_CPU, HOST_RAM_MB = 4, 4 * VM_RAM


# -- the processes ---------------------------------------------------------------------


def central_settings(
    database_url: str,
    rabbitmq_url: str,
    key_file: Path,
    *,
    stale_after: float = 300.0,
    liveness_timeout: float = 1.5,
) -> CentralSettings:
    return CentralSettings(
        http=HttpSettings(host="127.0.0.1", port=0),
        database=DatabaseSettings(url=database_url, pool_size=8),
        rabbitmq=RabbitSettings(url=rabbitmq_url),
        datacenters=DatacentersSettings(liveness_timeout=liveness_timeout, request_timeout=10.0),
        # Every central process of an installation reads the same key.
        secrets=SecretsSettings(key_file=str(key_file)),
        tasks=TasksSettings(stale_after=stale_after, check_interval=0.5),
    )


def new_central(settings: CentralSettings) -> Central:
    return Central(
        settings,
        transport=AmqpTransport(
            settings.rabbitmq.url, connection_name=f"stress central {uuid.uuid4()}"
        ),
    )


async def seed_admin(settings: CentralSettings) -> None:
    """The empty database's one user: the cloud administrator every installation seeds."""
    central = new_central(settings)
    await ensure_admin(central.engine, password="admin-pw")
    await central.engine.dispose()


@contextlib.asynccontextmanager
async def running_central(settings: CentralSettings) -> AsyncIterator[Central]:
    central = new_central(settings)
    await central.start()
    try:
        yield central
    finally:
        await run_stages(central.shutdown_stages())


def simulated_datacenter(
    tmp_path: Path, rabbitmq_url: str, redis_prefix: str, hosts: int
) -> Datacenter:
    """The DC as abiquo-dc composes it, its KVM hosts simulated (10.30.0.1, ...), each
    with room for HOST_CPU CPUs and HOST_RAM_MB of RAM; the same state directory each
    time (the same uuid)."""
    repository = tmp_path / "repository"
    repository.mkdir(exist_ok=True)
    (repository / ".abiquo_repository").touch()
    dc = build_datacenter(
        DCSettings(
            datacenter=DatacenterSettings(
                name="madrid", state_dir=str(tmp_path / "dc"), heartbeat_interval=0.2
            ),
            http=HttpSettings(host="127.0.0.1", port=0),
            # Stopped in the middle of a job, it does not wait for it long.
            shutdown=ShutdownSettings(drain_timeout=0.5),
            repository=RepositorySettings(path=str(repository)),
            rabbitmq=RabbitSettings(url=rabbitmq_url),
            redis=RedisSettings(prefix=f"{redis_prefix}stress-{uuid.uuid4().hex[:6]}:"),
            simulator=SimulatorSettings(enabled=True, types=[HypervisorType.KVM]),
        ),
        transport=AmqpTransport(rabbitmq_url, connection_name=f"stress dc {uuid.uuid4()}"),
    )
    assert dc.simulator is not None
    for i in range(1, hosts + 1):
        dc.simulator.add_host(
            host_ip(i),
            name=f"kvm-{i:02}",
            hypervisor_type=HypervisorType.KVM,
            cpu_cores=HOST_CPU,
            cpu_sockets=1,
            ram_bytes=HOST_RAM_MB * MIB,
        )
    return dc


def host_ip(i: int) -> str:
    return f"10.30.0.{i}"


def simulator(dc: Datacenter) -> SimulatedCloud:
    assert dc.simulator is not None
    return dc.simulator


def carry_hosts_over(before: Datacenter, after: Datacenter) -> None:
    """The hosts outlive the DC's process, as real hypervisors do: the new process
    reaches the same hosts, with the VMs they have."""
    cloud = simulator(after)
    for address in list(cloud.hosts):
        cloud.remove_host(address)
    for address, host in simulator(before).hosts.items():
        host.cloud = cloud
        cloud.hosts[address] = host


# -- the cloud, over HTTP --------------------------------------------------------------


async def infrastructure(api: Api, dc: Datacenter) -> tuple[dict[str, Any], dict[str, Any]]:
    """The datacenter, a rack, and every simulated host as a machine of it."""
    datacenter = await create_datacenter(api, dc)
    here = link(datacenter, "edit")
    rack = await create_rack(api, here)
    for address in simulator(dc).hosts:
        found = await discover(api, here, ip=address, hypervisor="KVM")
        machine = await add_machine(api, rack, found, "")
        assert (machine["cpu"], machine["ram"]) == (HOST_CPU, HOST_RAM_MB), machine
    return datacenter, rack


async def with_token(api: Api) -> Api:
    """The same user by a session token: a password is checked (a slow hash) once, not
    at every request of the many that follow."""
    async with api.http.get(
        f"{api.root}/login",
        headers={"Authorization": api.auth, "Accept": "application/vnd.abiquo.user+json"},
    ) as response:
        assert response.status == 200, await response.text()
        token = response.headers["X-Abiquo-Token"]
    return Api(api.http, api.root, f"Token {token}")


async def qcow2(path: Path) -> bytes:
    process = await asyncio.create_subprocess_exec(
        "qemu-img", "create", "-q", "-f", "qcow2", str(path), "16M"
    )
    assert await process.wait() == 0
    return await asyncio.to_thread(path.read_bytes)


async def tenant(
    admin: Api, http: aiohttp.ClientSession, datacenter: dict[str, Any], tmp_path: Path
) -> tuple[Api, dict[str, Any], dict[str, Any]]:
    """An enterprise allowed plenty in the datacenter, its administrator's API, and a
    VDC's appliance to put VMs in, from a template uploaded to the DC's AM."""
    status, enterprise = await admin.call(
        "POST", "/admin/enterprises", media="enterprise", body={"name": "Ops"}
    )
    assert status == 201, enterprise
    status, limit = await admin.call(
        "POST",
        f"{link(enterprise, 'edit')}/limits",
        media="limit",
        body={
            "cpuSoft": 1000,
            "cpuHard": 1000,
            "ramSoft": 1_000_000,
            "ramHard": 1_000_000,
            "links": [{"rel": "location", "href": link(datacenter, "edit")}],
        },
    )
    assert status == 201, limit
    _, roles = await admin.call("GET", "/admin/roles", media="roles", limit="100")
    role = next(r for r in roles["collection"] if r["name"] == "ENTERPRISE_ADMIN")
    status, user = await admin.call(
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
    api = await with_token(admin.as_user("olga", PASSWORD))

    status, repository = await api.call(
        "GET",
        f"/admin/enterprises/{enterprise['id']}/datacenterrepositories/{datacenter['id']}",
        media="datacenterrepository",
    )
    assert status == 200, repository
    form = aiohttp.MultipartWriter("form-data")
    info = form.append_json(
        {"name": "tiny", "disk_format": "QCOW2_SPARSE", "cpu": VM_CPU, "ram_mb": VM_RAM}
    )
    info.set_content_disposition("form-data", name="diskInfo")
    part = form.append(
        await qcow2(tmp_path / "tiny.qcow2"), {"Content-Type": "application/octet-stream"}
    )
    part.set_content_disposition("form-data", name="diskFile", filename="tiny.qcow2")
    async with http.post(link(repository, "upload"), data=form) as response:
        assert response.status == 201, await response.text()

    async def listed() -> dict[str, Any] | None:
        _, found = await api.call(
            "GET", link(repository, "virtualmachinetemplates"), media="virtualmachinetemplates"
        )
        return next((t for t in found["collection"] if t["state"] == "DOWNLOAD"), None)

    template = await wait_for(listed)
    status, vdc = await api.call(
        "POST",
        "/cloud/virtualdatacenters",
        media="virtualdatacenter",
        body={
            "name": "vdc",
            "hypervisorType": "KVM",
            "links": [
                {"rel": "location", "href": f"{api.root}/cloud/locations/{datacenter['id']}"},
                {"rel": "enterprise", "href": link(enterprise, "edit")},
            ],
        },
    )
    assert status == 201, vdc
    status, vapp = await api.call(
        "POST", link(vdc, "virtualappliances"), media="virtualappliance", body={"name": "web"}
    )
    assert status == 201, vapp
    return api, template, {**vapp, "user": user}


def at(api: Api, href: str, roots: list[str]) -> str:
    """`href` as `api`'s central names it (each central's links carry its own address)."""
    for root in roots:
        if href.startswith(root):
            return api.root + href[len(root) :]
    return href


async def new_vm(api: Api, vms_href: str, template: dict[str, Any], n: int) -> Any:
    status, vm = await api.call(
        "POST",
        vms_href,
        media="virtualmachine",
        body={
            "label": f"web-{n}",
            "links": [{"rel": "virtualmachinetemplate", "href": link(template, "edit")}],
        },
    )
    assert status == 201, vm
    return vm


async def vms_of(api: Api, vapp: dict[str, Any]) -> list[dict[str, Any]]:
    _, found = await api.call(
        "GET", link(vapp, "virtualmachines"), media="virtualmachines", limit="500"
    )
    return list(found["collection"])


async def task_of(api: Api, href: str) -> dict[str, Any]:
    _, task = await api.call("GET", href, media="task")
    return dict(task)


async def none_locked(api: Api, vapp: dict[str, Any]) -> list[dict[str, Any]] | None:
    vms = await vms_of(api, vapp)
    return vms if not any(vm["state"] == "LOCKED" for vm in vms) else None


def machine_id(vm: dict[str, Any]) -> int:
    return int(link(vm, "machine").rstrip("/").rsplit("/", 1)[1])


# -- the tests -------------------------------------------------------------------------


async def test_fifty_deploys_at_once_through_two_centrals_never_overcommit(
    database_url: str, rabbitmq_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    settings = central_settings(database_url, rabbitmq_url, tmp_path / "central.key")
    dc = simulated_datacenter(tmp_path, rabbitmq_url, redis_prefix, hosts=10)
    await seed_admin(settings)
    async with (
        running_central(settings) as one,
        running_central(settings) as two,
        aiohttp.ClientSession() as http,
    ):
        await dc.start()
        try:
            admin = await with_token(Api(http, f"{one.url}/api"))
            datacenter, rack = await infrastructure(admin, dc)
            api, template, vapp = await tenant(admin, http, datacenter, tmp_path)
            # The same user on both centrals, their hrefs each central's own.
            apis = [api, Api(http, f"{two.url}/api", api.auth)]
            roots = [a.root for a in apis]

            def on(i: int, href: str) -> tuple[Api, str]:
                """Request i's central (every other one), and the href as it names it."""
                chosen = apis[i % 2]
                return chosen, at(chosen, href, roots)

            vms = await asyncio.gather(
                *(new_vm(*on(i, link(vapp, "virtualmachines")), template, i) for i in range(50))
            )
            # Both made them.
            assert {link(vm, "edit").split("/api/")[0] for vm in vms} == {
                root.split("/api")[0] for root in roots
            }

            async def deploy(i: int, vm: dict[str, Any]) -> tuple[int, Any]:
                chosen, href = on(i + 1, link(vm, "deploy"))
                return await chosen.call("POST", href, media="acceptedrequest")

            answers = await asyncio.gather(*(deploy(i, vm) for i, vm in enumerate(vms)))
            statuses = Counter(status for status, _ in answers)
            assert set(statuses) <= {202, 409}, answers
            refused = [body for status, body in answers if status == 409]
            assert all(b["collection"][0]["code"] == "SCHEDULER-1" for b in refused), refused

            # Every deploy ends: no VM stays LOCKED.
            final = {vm["id"]: vm for vm in await wait_for(lambda: none_locked(api, vapp), 60)}
            for (status, body), vm in zip(answers, vms, strict=True):
                state = final[vm["id"]]["state"]
                if status == 409:
                    assert state == "NOT_ALLOCATED", final[vm["id"]]
                    continue
                task = await task_of(api, link(body, "status"))
                assert task["state"] in ("FINISHED_SUCCESSFULLY", "FINISHED_UNSUCCESSFULLY")
                wanted = "ON" if task["state"] == "FINISHED_SUCCESSFULLY" else "NOT_ALLOCATED"
                assert state == wanted, (task, final[vm["id"]])
            states = Counter(vm["state"] for vm in final.values())
            # Room for forty: forty deployed, and the ten others refused or failed.
            assert states == {"ON": 40, "NOT_ALLOCATED": 10}, states

            # No machine holds more than it has, nor other than what its VMs need.
            _, machines = await admin.call(
                "GET", link(rack, "machines"), media="machines", limit="100"
            )
            on_machine: dict[int, list[dict[str, Any]]] = {}
            for vm in final.values():
                if vm["state"] == "ON":
                    on_machine.setdefault(machine_id(vm), []).append(vm)
            assert len(machines["collection"]) == 10
            for machine in machines["collection"]:
                held = on_machine.get(machine["id"], [])
                assert machine["cpuUsed"] <= machine["cpu"], machine
                assert machine["ramUsed"] <= machine["ram"], machine
                assert machine["cpuUsed"] == sum(vm["cpu"] for vm in held), machine
                assert machine["ramUsed"] == sum(vm["ram"] for vm in held), machine
                # And on the host itself: those VMs, running.
                host = simulator(dc).host(machine["ip"])
                assert sorted(host.vms) == sorted(vm["uuid"] for vm in held)
                assert all(v.power_state.value == "ON" for v in host.vms.values())

            # No two NICs share an address, IP or MAC.
            nics = [
                nic
                for found in await asyncio.gather(
                    *(api.call("GET", link(vm, "nics"), media="nics") for vm in vms)
                )
                for nic in found[1]["collection"]
            ]
            assert len(nics) >= 50
            assert len({nic["ip"] for nic in nics}) == len(nics)
            assert len({nic["mac"].lower() for nic in nics}) == len(nics)
        finally:
            await run_stages(dc.shutdown_stages())


async def test_a_datacenter_stopped_during_a_deploy_leaves_no_vm_locked(
    database_url: str, rabbitmq_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    settings = central_settings(
        database_url, rabbitmq_url, tmp_path / "central.key", stale_after=3.0
    )
    dc = simulated_datacenter(tmp_path, rabbitmq_url, redis_prefix, hosts=1)
    host = simulator(dc).host(host_ip(1))
    await seed_admin(settings)
    running: Datacenter | None = None
    async with running_central(settings) as central, aiohttp.ClientSession() as http:
        await dc.start()
        running = dc
        try:
            admin = await with_token(Api(http, f"{central.url}/api"))
            datacenter, _ = await infrastructure(admin, dc)
            api, template, vapp = await tenant(admin, http, datacenter, tmp_path)
            vm = await new_vm(api, link(vapp, "virtualmachines"), template, 1)

            # The deploy's CONFIGURE takes long on the host: the DC stops in its middle.
            host.delay("configure", 20)
            status, accepted = await api.call("POST", link(vm, "deploy"), media="acceptedrequest")
            assert status == 202, accepted
            status_href = link(accepted, "status")

            async def configuring() -> bool:
                task = await task_of(api, status_href)
                return bool(task["jobs"]["collection"][0]["state"] == "STARTED")

            await wait_for(configuring)
            await run_stages(dc.shutdown_stages())
            running = None
            # 30 s away: long enough for central to ask about the task (stale_after),
            # which nothing answers meanwhile.
            await asyncio.sleep(30)
            assert (await task_of(api, status_href))["state"] in ("PENDING", "STARTED")
            assert [v["state"] for v in await vms_of(api, vapp)] == ["LOCKED"]

            # Back, the same state directory (the same uuid, its journal), the same host.
            host.delay("configure", 0)
            again = simulated_datacenter(tmp_path, rabbitmq_url, redis_prefix, hosts=0)
            carry_hosts_over(dc, again)
            assert again.uuid == dc.uuid
            await again.start()
            running = again

            [final] = await wait_for(lambda: none_locked(api, vapp), 30)
            task = await task_of(api, status_href)
            if task["state"] == "FINISHED_SUCCESSFULLY":
                assert final["state"] == "ON", final
                assert host.vm(vm["uuid"]).power_state.value == "ON"
            else:
                assert task["state"] == "FINISHED_UNSUCCESSFULLY", task
                assert final["state"] == "NOT_ALLOCATED", final
                assert vm["uuid"] not in host.vms
            assert [j["state"] for j in task["jobs"]["collection"]] == ["DONE", "DONE"], task

            # Central asked about the task while the DC was away (a REFRESH every
            # stale_after); the questions are answered too: nothing is left unfinished.
            async def all_finished() -> Counter[str] | None:
                async with central.engine.connect() as conn:
                    rows = (
                        await conn.execute(select(tables.task.c.type, tables.task.c.state))
                    ).all()
                done = all(row.state.startswith("FINISHED") for row in rows)
                return Counter(row.type for row in rows) if done else None

            kinds = await wait_for(all_finished)
            assert kinds["DEPLOY"] == 1 and kinds["REFRESH"] >= 1, kinds
        finally:
            if running is not None:
                await run_stages(running.shutdown_stages())


async def test_a_task_committed_by_a_central_that_died_before_publishing_runs_once(
    database_url: str,
    rabbitmq_url: str,
    redis_prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Its DC is heard from by whichever central runs; the one that dies runs nothing.
    settings = central_settings(
        database_url, rabbitmq_url, tmp_path / "central.key", liveness_timeout=60.0
    )
    dc = simulated_datacenter(tmp_path, rabbitmq_url, redis_prefix, hosts=1)
    host: SimulatedHost = simulator(dc).host(host_ip(1))
    configured: list[str] = []
    configure = host.configure

    def counted(definition: VirtualMachineDefinition) -> None:
        configured.append(definition.uuid)
        configure(definition)

    monkeypatch.setattr(host, "configure", counted)
    await seed_admin(settings)
    await dc.start()
    try:
        async with aiohttp.ClientSession() as http:
            async with running_central(settings) as central:
                admin = await with_token(Api(http, f"{central.url}/api"))
                datacenter, _ = await infrastructure(admin, dc)
                api, template, vapp = await tenant(admin, http, datacenter, tmp_path)
                vm = await new_vm(api, link(vapp, "virtualmachines"), template, 1)
            user = vapp["user"]

            # A central that commits the task and dies before its relay sends anything:
            # never started, so it has no relay; its engine is dropped as a crash would.
            doomed = new_central(settings)
            started = await start_task(
                doomed.engine,
                vm["id"],
                TaskType.DEPLOY,
                actor=Actor(user_id=user["id"], nick="olga", enterprise_id=vm_enterprise(vm)),
                secrets=doomed.secrets,
                now=utc_now(),
                liveness_timeout=settings.datacenters.liveness_timeout,
            )
            outbox = tables.outbox
            async with doomed.engine.connect() as conn:
                queued = (
                    await conn.execute(
                        select(outbox.c.id, outbox.c.sent_at).where(
                            outbox.c.service == "virtualfactory"
                        )
                    )
                ).all()
            await doomed.engine.dispose()
            del doomed
            assert [row.sent_at for row in queued] == [None]
            assert host.vms == {} and configured == []

            # The next central sends it.
            async with running_central(settings) as fresh:
                api = Api(http, f"{fresh.url}/api", api.auth)
                here = f"{link(vm, 'edit').replace(f'{central.url}/api', api.root)}"
                status_href = f"{here}/tasks/{started.task_id}"

                async def over() -> dict[str, Any] | None:
                    task = await task_of(api, status_href)
                    return task if task["state"].startswith("FINISHED") else None

                task = await wait_for(over)
                assert task["state"] == "FINISHED_SUCCESSFULLY", task
                jobs = task["jobs"]["collection"]
                assert [(j["type"], j["state"]) for j in jobs] == [
                    ("CONFIGURE", "DONE"),
                    ("POWER_ON", "DONE"),
                ]
                _, found = await api.call("GET", here, media="virtualmachine")
                assert found["state"] == "ON", found
                async with fresh.engine.connect() as conn:
                    sent = (
                        await conn.execute(
                            select(outbox.c.sent_at).where(outbox.c.id == queued[0].id)
                        )
                    ).scalar_one()
                assert sent is not None
            # Once: one domain on the host, configured once.
            assert list(host.vms) == [vm["uuid"]]
            assert configured == [vm["uuid"]]
    finally:
        await run_stages(dc.shutdown_stages())


def vm_enterprise(vm: dict[str, Any]) -> int:
    return int(link(vm, "enterprise").rstrip("/").rsplit("/", 1)[1])
