"""A whole infrastructure set up over HTTP only, from an empty database.

Central and a datacenter, each composed as its program composes it, over the real
MariaDB, RabbitMQ and Redis. The datacenter simulates VMX_04 hosts and reaches KVM hosts
through their AIM, here one over libvirt's test driver. Through the API alone: the
datacenter with its remote services pointing at the running DC, a rack, and two machines
discovered by the DC (a simulated ESXi host, and the KVM host), watched by its VSM from
then on. Then the DC stops: its services and machines show unavailable and what needs it
answers 503; it starts again and everything recovers by itself.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest

from abiquo_central.app import Central
from abiquo_central.db.migrate import upgrade
from abiquo_central.settings import (
    CentralSettings,
    DatabaseSettings,
    DatacentersSettings,
    SecretsSettings,
)
from abiquo_central.tenants.seed import ensure_admin
from abiquo_dc.app import Datacenter, build_datacenter
from abiquo_dc.hypervisors.simulator import SimulatedDatastore
from abiquo_dc.protocol.definitions import HypervisorType
from abiquo_dc.settings import (
    DatacenterSettings,
    DCSettings,
    KvmSettings,
    RedisSettings,
    RepositorySettings,
    SimulatorSettings,
)
from abiquo_runtime.messaging.amqp import AmqpTransport
from abiquo_runtime.settings import HttpSettings, RabbitSettings
from abiquo_runtime.shutdown import run_stages
from tests.dc.hypervisors.kvm_host import KvmHost, running_kvm_host

pytestmark = [pytest.mark.mariadb, pytest.mark.rabbitmq, pytest.mark.redis]

T = TypeVar("T")
ADMIN = {"Authorization": aiohttp.encode_basic_auth("admin", "admin-pw")}
SIMULATED = "10.20.0.5"
SERVICES = {
    "VIRTUAL_FACTORY": "virtualfactory",
    "VIRTUAL_SYSTEM_MONITOR": "vsm",
    "NODE_COLLECTOR": "nodecollector",
    "STORAGE_SYSTEM_MONITOR": "ssm",
    "APPLIANCE_MANAGER": "am",
    "BPM_SERVICE": "bpm-async",
}


def vendor(name: str) -> str:
    return f"application/vnd.abiquo.{name}+json"


@pytest.fixture
def database_url(fresh_database_url: str) -> str:
    upgrade(fresh_database_url)
    return fresh_database_url


@pytest.fixture
async def central(database_url: str, rabbitmq_url: str, tmp_path: Path) -> AsyncIterator[Central]:
    settings = CentralSettings(
        http=HttpSettings(host="127.0.0.1", port=0),
        database=DatabaseSettings(url=database_url, pool_size=4),
        rabbitmq=RabbitSettings(url=rabbitmq_url),
        datacenters=DatacentersSettings(liveness_timeout=1.5, request_timeout=10.0),
        secrets=SecretsSettings(key_file=str(tmp_path / "central.key")),
    )
    central = Central(
        settings,
        transport=AmqpTransport(rabbitmq_url, connection_name=f"infra central {uuid.uuid4()}"),
    )
    # The empty database's one user: the cloud administrator every installation seeds.
    await ensure_admin(central.engine, password="admin-pw")
    await central.start()
    try:
        yield central
    finally:
        await run_stages(central.shutdown_stages())


@pytest.fixture
async def kvm(tmp_path: Path) -> AsyncIterator[KvmHost]:
    async with running_kvm_host(tmp_path / "kvm") as host:
        yield host


def datacenter_process(
    tmp_path: Path, rabbitmq_url: str, redis_prefix: str, kvm: KvmHost
) -> Datacenter:
    """The DC as abiquo-dc composes it; the same state directory each time (same uuid)."""
    repository = tmp_path / "repository"
    repository.mkdir(exist_ok=True)
    (repository / ".abiquo_repository").touch()
    dc = build_datacenter(
        DCSettings(
            datacenter=DatacenterSettings(
                name="madrid", state_dir=str(tmp_path / "dc"), heartbeat_interval=0.2
            ),
            http=HttpSettings(host="127.0.0.1", port=0),
            repository=RepositorySettings(path=str(repository)),
            rabbitmq=RabbitSettings(url=rabbitmq_url),
            redis=RedisSettings(prefix=f"{redis_prefix}infra-{uuid.uuid4().hex[:6]}:"),
            # ESXi hosts are simulated; KVM hosts are real, behind their AIM.
            simulator=SimulatorSettings(enabled=True, types=[HypervisorType.VMX_04]),
            kvm=KvmSettings(domain_type="test"),
        ),
        transport=AmqpTransport(rabbitmq_url, connection_name=f"infra dc {uuid.uuid4()}"),
    )
    assert dc.simulator is not None
    dc.simulator.add_host(
        SIMULATED,
        name="esx-01",
        hypervisor_type=HypervisorType.VMX_04,
        datastores=[
            SimulatedDatastore(
                name="datastore1", path="/vmfs/volumes/datastore1", total_bytes=2**40
            )
        ],
    )
    return dc


async def wait_for(check: Callable[[], Awaitable[T | None]], timeout: float = 20) -> T:
    async with asyncio.timeout(timeout):
        while True:
            found = await check()
            if found:
                return found
            await asyncio.sleep(0.1)


class Api:
    """The API as a client sees it: JSON over HTTP with the administrator's credentials."""

    def __init__(self, http: aiohttp.ClientSession, root: str) -> None:
        self.http, self.root = http, root

    async def call(
        self, method: str, path: str, *, media: str, body: Any = None, **params: Any
    ) -> tuple[int, Any]:
        url = path if path.startswith("http") else f"{self.root}{path}"
        headers = {**ADMIN, "Accept": vendor(media)}
        if body is not None:
            headers["Content-Type"] = vendor(media)
        async with self.http.request(
            method, url, json=body, headers=headers, params=params or None
        ) as response:
            text = await response.text()
            try:
                payload = await response.json(content_type=None)
            except ValueError:
                payload = text
            return response.status, payload


def link(entity: dict[str, Any], rel: str) -> str:
    return next(lk["href"] for lk in entity["links"] if lk["rel"] == rel)


async def test_an_infrastructure_set_up_over_http_from_an_empty_database(
    central: Central, rabbitmq_url: str, redis_prefix: str, kvm: KvmHost, tmp_path: Path
) -> None:
    dc = datacenter_process(tmp_path, rabbitmq_url, redis_prefix, kvm)
    await dc.start()
    running: Datacenter | None = dc
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, f"{central.url}/api")

            # The datacenter, with its remote services at the running DC.
            status, created = await api.call(
                "POST",
                "/admin/datacenters",
                media="datacenter",
                body={
                    "name": "Madrid",
                    "location": "Spain",
                    "remoteServices": {
                        "collection": [
                            {"type": kind, "uri": f"{dc.server.url}/{path}"}
                            for kind, path in SERVICES.items()
                        ]
                    },
                },
            )
            assert status == 201, created
            assert created["uuid"] == dc.uuid
            here = link(created, "edit")

            async def services_up() -> dict[str, Any] | None:
                _, found = await api.call("GET", here, media="datacenter")
                statuses = [rs["status"] for rs in found["remoteServices"]["collection"]]
                return found if found["available"] and statuses == [1] * len(SERVICES) else None

            await wait_for(services_up)

            status, rack = await api.call(
                "POST",
                f"{here}/racks",
                media="rack",
                body={"name": "rack-1", "vlanIdMin": 100, "vlanIdMax": 200},
            )
            assert status == 201, rack
            machines_url = link(rack, "machines")

            # Discovered by the DC: the simulated ESXi host and the KVM host's AIM.
            status, esx = await api.call(
                "GET",
                f"{here}/action/discoversingle",
                media="machine",
                ip=SIMULATED,
                hypervisor="VMX_04",
                user="root",
                password="esx-secret",
            )
            assert status == 200, esx
            status, kvm_machine = await api.call(
                "GET",
                f"{here}/action/discoversingle",
                media="machine",
                ip=kvm.connection.address,
                hypervisor="KVM",
                port=str(kvm.port),
            )
            assert status == 200, kvm_machine
            assert (esx["type"], kvm_machine["type"]) == ("VMX_04", "KVM")
            _, detected = await api.call(
                "GET", f"{here}/action/hypervisor", media="machine", ip=SIMULATED
            )
            assert detected == "VMX_04"

            ids = []
            for found, password in ((esx, "esx-secret"), (kvm_machine, "")):
                found["virtualSwitch"] = found["virtualSwitch"].split(",")[0]
                for ds in found["datastores"]["collection"]:
                    ds["enabled"] = True
                found["password"] = password
                status, machine = await api.call("POST", machines_url, media="machine", body=found)
                assert status == 201, machine
                assert "password" not in machine
                ids.append(machine["id"])

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
            running = datacenter_process(tmp_path, rabbitmq_url, redis_prefix, kvm)
            await running.start()

            async def all_up() -> bool:
                found = await services_up()
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
