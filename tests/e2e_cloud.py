"""What the end-to-end tests share: central and a datacenter composed as their programs
compose them, over the real MariaDB, RabbitMQ and Redis, a KVM host (a real AIM over
libvirt's test driver), the API as a client sees it, and the infrastructure set up
through that API alone.

Fixtures (a test module imports the ones it uses): `database_url`, `central`, `kvm`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
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
    AmSettings,
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

T = TypeVar("T")
ADMIN = aiohttp.encode_basic_auth("admin", "admin-pw")
SIMULATED = "10.20.0.5"
SERVICES = {
    "VIRTUAL_FACTORY": "virtualfactory",
    "VIRTUAL_SYSTEM_MONITOR": "vsm",
    "NODE_COLLECTOR": "nodecollector",
    "STORAGE_SYSTEM_MONITOR": "ssm",
    "APPLIANCE_MANAGER": "am",
    "BPM_SERVICE": "bpm-async",
}


def vendor(name: str, fmt: str = "json") -> str:
    return f"application/vnd.abiquo.{name}+{fmt}"


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
        transport=AmqpTransport(rabbitmq_url, connection_name=f"e2e central {uuid.uuid4()}"),
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
    # This machine cannot make VLANs, and a test must not touch its interfaces.
    async with running_kvm_host(tmp_path / "kvm", recorded_vlans=True) as host:
        yield host


def datacenter_process(
    tmp_path: Path,
    rabbitmq_url: str,
    redis_prefix: str,
    *,
    repository: Path | None = None,
    am: AmSettings | None = None,
) -> Datacenter:
    """The DC as abiquo-dc composes it; the same state directory each time (same uuid).

    `repository`: the template repository (the NFS share its KVM hosts mount too); by
    default one of its own under `tmp_path`. `am`: its Appliance Manager's settings."""
    if repository is None:
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
            am=am or AmSettings(),
            rabbitmq=RabbitSettings(url=rabbitmq_url),
            redis=RedisSettings(prefix=f"{redis_prefix}e2e-{uuid.uuid4().hex[:6]}:"),
            # ESXi hosts are simulated; KVM hosts are real, behind their AIM.
            simulator=SimulatorSettings(enabled=True, types=[HypervisorType.VMX_04]),
            kvm=KvmSettings(domain_type="test"),
        ),
        transport=AmqpTransport(rabbitmq_url, connection_name=f"e2e dc {uuid.uuid4()}"),
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
    """The API as a client sees it: JSON over HTTP with one user's credentials."""

    def __init__(self, http: aiohttp.ClientSession, root: str, auth: str = ADMIN) -> None:
        self.http, self.root, self.auth = http, root, auth

    def as_user(self, nick: str, password: str) -> Api:
        return Api(self.http, self.root, aiohttp.encode_basic_auth(nick, password))

    async def call(
        self,
        method: str,
        path: str,
        *,
        media: str,
        body: Any = None,
        accept: str | None = None,
        **params: Any,
    ) -> tuple[int, Any]:
        """`media` names the body and the answer; `accept` the answer, when it differs."""
        url = path if path.startswith("http") else f"{self.root}{path}"
        headers = {"Authorization": self.auth, "Accept": vendor(accept or media)}
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

    async def call_xml(
        self,
        method: str,
        path: str,
        *,
        media: str,
        body: str | None = None,
        content: str | None = None,
    ) -> tuple[int, str]:
        """The same in XML, the body and the answer as text; `media` names the answer
        (and the body, unless `content` does)."""
        url = path if path.startswith("http") else f"{self.root}{path}"
        headers = {"Authorization": self.auth, "Accept": vendor(media, "xml")}
        if body is not None:
            headers["Content-Type"] = vendor(content or media, "xml")
        async with self.http.request(method, url, data=body, headers=headers) as response:
            return response.status, await response.text()


def link(entity: dict[str, Any], rel: str) -> str:
    return str(next(lk["href"] for lk in entity["links"] if lk["rel"] == rel))


@dataclass(frozen=True)
class Infrastructure:
    """What `set_up_infrastructure` made: hrefs and ids, as the API gave them."""

    datacenter: dict[str, Any]
    rack: dict[str, Any]
    machine: dict[str, Any]

    @property
    def datacenter_href(self) -> str:
        return link(self.datacenter, "edit")

    @property
    def datacenter_id(self) -> int:
        return int(self.datacenter["id"])


async def create_datacenter(api: Api, dc: Datacenter) -> dict[str, Any]:
    """The datacenter, with its remote services at the running DC, once all are up."""
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
    await wait_for(lambda: services_up(api, link(created, "edit")))
    return dict(created)


async def services_up(api: Api, here: str) -> dict[str, Any] | None:
    _, found = await api.call("GET", here, media="datacenter")
    statuses = [rs["status"] for rs in found["remoteServices"]["collection"]]
    return found if found["available"] and statuses == [1] * len(SERVICES) else None


async def create_rack(api: Api, datacenter_href: str) -> dict[str, Any]:
    status, rack = await api.call(
        "POST",
        f"{datacenter_href}/racks",
        media="rack",
        body={"name": "rack-1", "vlanIdMin": 100, "vlanIdMax": 200},
    )
    assert status == 201, rack
    return dict(rack)


async def discover(api: Api, datacenter_href: str, **query: str) -> dict[str, Any]:
    status, found = await api.call(
        "GET", f"{datacenter_href}/action/discoversingle", media="machine", **query
    )
    assert status == 200, found
    return dict(found)


async def add_machine(
    api: Api, rack: dict[str, Any], found: dict[str, Any], password: str
) -> dict[str, Any]:
    """A discovered machine added to the rack, its first virtual switch and every
    datastore enabled."""
    found = dict(found)
    found["virtualSwitch"] = found["virtualSwitch"].split(",")[0]
    for ds in found["datastores"]["collection"]:
        ds["enabled"] = True
    found["password"] = password
    status, machine = await api.call("POST", link(rack, "machines"), media="machine", body=found)
    assert status == 201, machine
    assert "password" not in machine
    return dict(machine)


async def set_up_infrastructure(api: Api, dc: Datacenter, kvm: KvmHost) -> Infrastructure:
    """A datacenter at the running DC, a rack, and the KVM host as its machine."""
    datacenter = await create_datacenter(api, dc)
    here = link(datacenter, "edit")
    rack = await create_rack(api, here)
    found = await discover(
        api, here, ip=kvm.connection.address, hypervisor="KVM", port=str(kvm.port)
    )
    assert found["type"] == "KVM"
    machine = await add_machine(api, rack, found, "")
    return Infrastructure(datacenter=datacenter, rack=rack, machine=machine)
