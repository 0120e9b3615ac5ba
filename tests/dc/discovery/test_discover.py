"""Discovery's domain functions against a SimulatedCloud: ranges, bounds, timeouts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from abiquo_dc.discovery.discover import (
    address_range,
    detect_type,
    discover_host,
    discover_range,
    discover_vms,
)
from abiquo_dc.hypervisors.base import HostUnreachable
from abiquo_dc.hypervisors.simulator import SimulatedCloud
from abiquo_dc.protocol.definitions import (
    HypervisorConnection,
    HypervisorType,
    VirtualMachineDefinition,
)
from abiquo_dc.protocol.messages import DiscoveredHost, DiscoveryFailure
from abiquo_runtime.errors import InvalidInput


@pytest.fixture
async def cloud() -> AsyncIterator[SimulatedCloud]:
    c = SimulatedCloud()
    yield c
    await c.close()


def test_address_range() -> None:
    assert address_range("10.0.0.254", "10.0.1.1") == [
        "10.0.0.254",
        "10.0.0.255",
        "10.0.1.0",
        "10.0.1.1",
    ]
    assert address_range("fe80::1", "fe80::2") == ["fe80::1", "fe80::2"]
    with pytest.raises(InvalidInput, match="at most 1024"):
        address_range("10.0.0.0", "10.0.4.0")
    with pytest.raises(InvalidInput, match="ends before"):
        address_range("10.0.0.2", "10.0.0.1")
    with pytest.raises(InvalidInput, match="not an IPv4"):
        address_range("10.0.0.300", "10.0.0.1")
    with pytest.raises(InvalidInput, match="same IP version"):
        address_range("10.0.0.1", "::1")


async def test_host_and_vms(cloud: SimulatedCloud) -> None:
    host = cloud.add_host("10.0.0.1", hypervisor_type=HypervisorType.XENSERVER)
    host.add_vm(VirtualMachineDefinition(uuid="u-1", name="one", cpu=1, ram_mb=256))
    connection = HypervisorConnection(type=HypervisorType.XENSERVER, address="10.0.0.1")
    info = await discover_host(connection, simulator=cloud, timeout=1)
    assert info.hypervisor_type is HypervisorType.XENSERVER
    vms = await discover_vms(connection, simulator=cloud, timeout=1)
    assert [vm.uuid for vm in vms] == ["u-1"]
    with pytest.raises(HostUnreachable):
        await discover_host(
            HypervisorConnection(type=HypervisorType.KVM, address="10.0.0.2"),
            simulator=cloud,
            timeout=1,
        )


async def test_detect_type(cloud: SimulatedCloud) -> None:
    cloud.add_host("10.0.0.1", hypervisor_type=HypervisorType.VMX_04)
    assert await detect_type("10.0.0.1", timeout=1, simulator=cloud) is HypervisorType.VMX_04
    assert await detect_type("10.0.0.2", timeout=1, simulator=cloud) is None
    cloud.host("10.0.0.1").disconnect(60)
    assert await detect_type("10.0.0.1", timeout=1, simulator=cloud) is None


async def test_200_hosts_of_which_10_unreachable(cloud: SimulatedCloud) -> None:
    addresses = address_range("10.1.0.1", "10.1.0.200")
    missing = set(addresses[0::40])  # 5 addresses where nothing answers
    disconnected = set(addresses[1::40])  # 5 hosts that are there but disconnected
    for address in addresses:
        if address not in missing:
            host = cloud.add_host(address)
            if address in disconnected:
                host.disconnect(60)
    results = await discover_range(
        addresses, HypervisorType.KVM, concurrency=16, timeout=1, simulator=cloud
    )
    assert [r.address for r in results] == addresses
    hosts = [r for r in results if isinstance(r, DiscoveredHost)]
    errors = [r for r in results if isinstance(r, DiscoveryFailure)]
    assert (len(hosts), len(errors)) == (190, 10)
    assert {e.address for e in errors} == missing | disconnected
    assert {e.code for e in errors} == {"HV-UNREACHABLE"}
    assert hosts[0].name == f"sim-{hosts[0].address}"


async def test_a_hung_host_delays_the_others_by_no_more_than_its_timeout(
    cloud: SimulatedCloud,
) -> None:
    addresses = address_range("10.3.0.1", "10.3.0.50")
    for address in addresses:
        cloud.add_host(address)
    cloud.host(addresses[0]).hang("host_info")
    timeout = 0.5
    started = time.monotonic()
    results = await discover_range(
        addresses, HypervisorType.KVM, concurrency=8, timeout=timeout, simulator=cloud
    )
    elapsed = time.monotonic() - started
    assert elapsed < timeout + 0.3
    first, *rest = results
    assert isinstance(first, DiscoveryFailure) and first.code == "HV-UNREACHABLE"
    assert all(isinstance(r, DiscoveredHost) for r in rest)


async def test_a_host_hung_on_connect_costs_its_timeout_too(cloud: SimulatedCloud) -> None:
    cloud.add_host("10.4.0.1").hang("connect")
    cloud.add_host("10.4.0.2").delay("host_info", 0.2)
    started = time.monotonic()
    results = await discover_range(
        ["10.4.0.1", "10.4.0.2"], HypervisorType.KVM, timeout=0.4, simulator=cloud
    )
    assert time.monotonic() - started < 0.7
    assert isinstance(results[0], DiscoveryFailure)
    assert isinstance(results[1], DiscoveredHost)


async def test_cancelling_a_range_leaves_no_task(cloud: SimulatedCloud) -> None:
    for address in address_range("10.5.0.1", "10.5.0.10"):
        cloud.add_host(address).hang("host_info")
    task = asyncio.ensure_future(
        discover_range(
            address_range("10.5.0.1", "10.5.0.10"),
            HypervisorType.KVM,
            timeout=30,
            simulator=cloud,
        )
    )
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
