"""The Discovery Manager through its HTTP routes (the nodecollector) and the bus."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from abiquo_dc.bus import Bus
from abiquo_dc.discovery.service import DiscoveryManager
from abiquo_dc.hypervisors.base import AuthenticationFailed
from abiquo_dc.hypervisors.simulator import SimulatedCloud
from abiquo_dc.protocol.definitions import HypervisorType, VirtualMachineDefinition
from abiquo_dc.protocol.messages import (
    DetectHypervisor,
    DiscoverHosts,
    HostsDiscovered,
    HypervisorDetected,
)
from abiquo_runtime.errors import InvalidInput


@pytest.fixture
async def cloud() -> AsyncIterator[SimulatedCloud]:
    c = SimulatedCloud()
    host = c.add_host("10.0.0.1", hypervisor_type=HypervisorType.KVM)
    host.add_vm(VirtualMachineDefinition(uuid="u-1", name="one", cpu=1, ram_mb=256))
    host.add_vm(VirtualMachineDefinition(uuid="u-2", name="two", cpu=2, ram_mb=512))
    yield c
    await c.close()


@pytest.fixture
async def manager(cloud: SimulatedCloud) -> AsyncIterator[DiscoveryManager]:
    bus = Bus()
    dm = DiscoveryManager(bus=bus, dc_uuid="dc-1", simulator=cloud, timeout=0.5)
    await dm.start()
    await dm.wait_running(2)
    yield dm
    await dm.stop()
    await bus.close()


@pytest.fixture
async def client(
    manager: DiscoveryManager,
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = web.Application()
    app.add_routes(manager.all_routes())
    async with TestClient(TestServer(app)) as c:
        yield c


Client = TestClient[web.Request, web.Application]


async def test_the_hypervisor_type(client: Client) -> None:
    resp = await client.get("/nodecollector/10.0.0.1/hypervisor")
    assert resp.status == 200
    assert resp.content_type == "text/plain"
    assert await resp.text() == "KVM"
    resp = await client.get("/nodecollector/10.0.0.9/hypervisor")
    assert resp.status == 404


async def test_the_host(client: Client) -> None:
    resp = await client.get("/nodecollector/10.0.0.1/host?hypervisor=KVM&user=u&password=p")
    assert resp.status == 200
    body = msgspec.json.decode(await resp.read())
    assert body["address"] == "10.0.0.1"
    assert body["hypervisor_type"] == "KVM"
    assert body["datastores"][0]["path"] == "/var/lib/virt"
    # Without the type, it is detected first.
    resp = await client.get("/nodecollector/10.0.0.1/host")
    assert resp.status == 200


async def test_the_vms(client: Client) -> None:
    base = "/nodecollector/10.0.0.1/virtualsystem?hypervisor=KVM"
    resp = await client.get(base)
    assert resp.status == 200
    vms = msgspec.json.decode(await resp.read())
    assert sorted(vm["uuid"] for vm in vms) == ["u-1", "u-2"]
    resp = await client.get(base + "&uuid=u-2")
    assert (msgspec.json.decode(await resp.read()))["name"] == "two"
    resp = await client.get(base + "&name=one")
    assert (msgspec.json.decode(await resp.read()))["uuid"] == "u-1"
    resp = await client.get(base + "&uuid=nope")
    assert resp.status == 404
    assert (await resp.json())["code"] == "HV-VM-NOT-FOUND"
    resp = await client.get(base + "&name=nope")
    assert resp.status == 404


@pytest.mark.parametrize(
    ("url", "status", "fragment"),
    [
        ("/nodecollector/10.0.0.300/host?hypervisor=KVM", 400, "not an IPv4"),
        ("/nodecollector/nonsense/hypervisor", 400, "not an IPv4"),
        ("/nodecollector/10.0.0.1/host?hypervisor=VMWARE", 400, "unknown hypervisor"),
        ("/nodecollector/10.0.0.1/host?hypervisor=KVM&port=70000", 400, "out of range"),
        ("/nodecollector/10.0.0.1/host?hypervisor=KVM&port=x", 400, "not a number"),
        ("/nodecollector/10.0.0.1/virtualsystem?hypervisor=KVM&uuid=a&name=b", 400, "not both"),
        ("/nodecollector/10.0.0.2/host?hypervisor=KVM", 503, "refused"),
        ("/nodecollector/10.0.0.2/host", 404, "no hypervisor"),
    ],
)
async def test_bad_input(client: Client, url: str, status: int, fragment: str) -> None:
    resp = await client.get(url)
    assert resp.status == status
    body = await resp.json()
    assert fragment in body["message"]
    assert body["code"]


async def test_unreachable_and_refused(client: Client, cloud: SimulatedCloud) -> None:
    host = cloud.host("10.0.0.1")
    host.hang("host_info")
    started = time.monotonic()
    resp = await client.get("/nodecollector/10.0.0.1/host?hypervisor=KVM")
    assert time.monotonic() - started < 1.0
    assert resp.status == 503
    assert (await resp.json())["code"] == "HV-UNREACHABLE"
    host.heal()
    host.fail("connect", error=AuthenticationFailed("bad password"))
    resp = await client.get("/nodecollector/10.0.0.1/host?hypervisor=KVM")
    assert resp.status == 401
    assert (await resp.json())["code"] == "HV-AUTH"


async def test_over_the_bus(manager: DiscoveryManager, cloud: SimulatedCloud) -> None:
    for i in range(2, 11):
        cloud.add_host(f"10.0.0.{i}")
    reply = await manager.bus.request(
        DiscoverHosts(hypervisor=HypervisorType.KVM, ip_from="10.0.0.1", ip_to="10.0.0.12"),
        timeout=5,
    )
    assert isinstance(reply, HostsDiscovered)
    assert len(reply.hosts) == 10
    assert sorted(e.address for e in reply.errors) == ["10.0.0.11", "10.0.0.12"]
    reply = await manager.bus.request(DetectHypervisor(address="10.0.0.1"), timeout=5)
    assert isinstance(reply, HypervisorDetected)
    assert reply.hypervisor is HypervisorType.KVM
    reply = await manager.bus.request(DetectHypervisor(address="10.9.9.9"), timeout=5)
    assert isinstance(reply, HypervisorDetected) and reply.hypervisor is None
    with pytest.raises(InvalidInput):
        await manager.bus.request(DiscoverHosts(hypervisor=HypervisorType.KVM), timeout=5)
    with pytest.raises(InvalidInput):
        await manager.bus.request(
            DiscoverHosts(hypervisor=HypervisorType.KVM, addresses=["x"]), timeout=5
        )


async def test_the_bus_handlers_go_with_the_subsystem(cloud: SimulatedCloud) -> None:
    bus = Bus()
    dm = DiscoveryManager(bus=bus, dc_uuid="dc-1", simulator=cloud)
    await dm.start()
    await dm.wait_running(2)
    assert bus.serves(DiscoverHosts) and bus.serves(DetectHypervisor)
    await dm.stop()
    assert not bus.serves(DiscoverHosts) and not bus.serves(DetectHypervisor)
    await bus.close()


def test_the_messages_cross_the_link() -> None:
    from abiquo_dc.protocol import Inbound, Reply, decode, encode

    request = DiscoverHosts(hypervisor=HypervisorType.KVM, addresses=["10.0.0.1"])
    assert decode(encode(request), Inbound) == request
    reply = HypervisorDetected(address="10.0.0.1", hypervisor=HypervisorType.KVM)
    assert decode(encode(reply), Reply) == reply
