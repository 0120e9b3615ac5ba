"""The simulator's knobs: scripted faults, mayhem, disk accounting, scale; the registry."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import time
from collections.abc import AsyncIterator

import pytest

from abiquo_dc.hypervisors.base import (
    DriverFailure,
    HostUnreachable,
    InvalidDefinition,
    NotSupported,
    PowerState,
    VmEvent,
    VmEventType,
)
from abiquo_dc.hypervisors.registry import open_driver
from abiquo_dc.hypervisors.simulator import (
    SimulatedCloud,
    SimulatedDatastore,
    SimulatorDriver,
)
from abiquo_dc.protocol.definitions import (
    DiskFormat,
    HypervisorConnection,
    HypervisorType,
    RepositoryDisk,
    VirtualMachineDefinition,
)

GIB = 1024**3


@pytest.fixture
async def cloud() -> AsyncIterator[SimulatedCloud]:
    cloud = SimulatedCloud()
    yield cloud
    await cloud.close()


def connection(address: str, type: HypervisorType = HypervisorType.KVM) -> HypervisorConnection:
    return HypervisorConnection(type=type, address=address)


@contextlib.asynccontextmanager
async def connected(
    cloud: SimulatedCloud, address: str, *, timeout: float = 2.0
) -> AsyncIterator[SimulatorDriver]:
    driver = SimulatorDriver(connection(address), cloud=cloud, timeout=timeout)
    await driver.connect()
    try:
        yield driver
    finally:
        await driver.close()


def vm(n: int, *, disk_gib: int = 0, persistent: bool = False) -> VirtualMachineDefinition:
    disks = [
        RepositoryDisk(
            repository_path="1/t/disk.raw",
            datastore="/var/lib/virt",
            format=DiskFormat.RAW,
            size_bytes=disk_gib * GIB,
            persistent=persistent,
        )
    ]
    return VirtualMachineDefinition(
        uuid=f"00000000-0000-4000-8000-{n:012d}",
        name=f"vm-{n}",
        cpu=1,
        ram_mb=256,
        disks=disks if disk_gib else [],
    )


async def test_unknown_address_is_refused_at_once(cloud: SimulatedCloud) -> None:
    driver = SimulatorDriver(connection("10.9.9.9"), cloud=cloud, timeout=30)
    started = time.monotonic()
    with pytest.raises(HostUnreachable):
        await driver.connect()
    assert time.monotonic() - started < 0.5
    with pytest.raises(HostUnreachable):
        await driver.list_vms()


async def test_host_pretends_to_be_its_type(cloud: SimulatedCloud) -> None:
    cloud.add_host("10.0.0.1", hypervisor_type=HypervisorType.VMX_04, cpu_cores=4)
    async with connected(cloud, "10.0.0.1") as driver:
        info = await driver.host_info()
        assert info.hypervisor_type is HypervisorType.VMX_04 is driver.hypervisor_type
        assert info.cpu_cores == 4


async def test_delay(cloud: SimulatedCloud) -> None:
    host = cloud.add_host("10.0.0.1")
    host.delay("list_vms", 0.2)
    async with connected(cloud, "10.0.0.1", timeout=1) as driver:
        started = time.monotonic()
        assert await driver.list_vms() == []
        assert time.monotonic() - started >= 0.2
        host.delay("list_vms", 5)
        with pytest.raises(HostUnreachable):
            await driver.list_vms()
        host.delay("list_vms", 0)
        assert await driver.list_vms() == []


async def test_fail_the_next_n_calls(cloud: SimulatedCloud) -> None:
    host = cloud.add_host("10.0.0.1")
    async with connected(cloud, "10.0.0.1") as driver:
        await driver.configure(vm(1))
        host.fail("power_on", times=2)
        for _ in range(2):
            with pytest.raises(HostUnreachable):
                await driver.power_on(vm(1).uuid)
        assert (await driver.get_vm(vm(1).uuid)).power_state is PowerState.OFF
        await driver.power_on(vm(1).uuid)
        host.fail("get_vm", error=DriverFailure("scripted refusal"))
        with pytest.raises(DriverFailure, match="scripted"):
            await driver.get_vm(vm(1).uuid)
        assert (await driver.get_vm(vm(1).uuid)).power_state is PowerState.ON


async def test_unknown_operation_name_is_refused(cloud: SimulatedCloud) -> None:
    with pytest.raises(ValueError, match="unknown operation"):
        cloud.add_host("10.0.0.1").fail("power_onn")


async def test_hang_is_unreachable_within_the_timeout_and_others_unaffected(
    cloud: SimulatedCloud,
) -> None:
    cloud.add_host("10.0.0.1").hang("list_vms")
    cloud.add_host("10.0.0.2")
    async with (
        connected(cloud, "10.0.0.1", timeout=0.3) as hung,
        connected(cloud, "10.0.0.2", timeout=0.3) as fine,
    ):
        started = time.monotonic()
        hung_call = asyncio.ensure_future(hung.list_vms())
        # The other host answers at once while the first hangs.
        assert await fine.list_vms() == []
        assert time.monotonic() - started < 0.1
        with pytest.raises(HostUnreachable):
            await hung_call
        assert 0.3 <= time.monotonic() - started < 1.0
        assert (await hung.host_info()).name  # only list_vms hangs


async def test_disconnect_breaks_calls_and_the_event_stream(cloud: SimulatedCloud) -> None:
    host = cloud.add_host("10.0.0.1")
    async with connected(cloud, "10.0.0.1") as driver:
        stream = driver.events()
        host.disconnect(0.2)
        with pytest.raises(HostUnreachable):
            await anext(stream)
        with pytest.raises(HostUnreachable):
            await driver.list_vms()
        with pytest.raises(HostUnreachable):
            await anext(driver.events())
        await asyncio.sleep(0.25)
        assert await driver.list_vms() == []
        # A new stream works again.
        stream = driver.events()
        await driver.configure(vm(1))
        event = await asyncio.wait_for(anext(stream), 1)
        assert (event.uuid, event.type) == (vm(1).uuid, VmEventType.CREATED)


async def test_driver_close_ends_its_streams(cloud: SimulatedCloud) -> None:
    cloud.add_host("10.0.0.1")
    driver = SimulatorDriver(connection("10.0.0.1"), cloud=cloud, timeout=1)
    await driver.connect()
    stream = driver.events()
    waiting = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0)
    await driver.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(waiting, 1)


async def test_mayhem_creates_destroys_and_powers_behind_our_back(
    cloud: SimulatedCloud,
) -> None:
    host = cloud.add_host("10.0.0.1")
    async with connected(cloud, "10.0.0.1") as driver:
        stream = driver.events()
        host.mayhem(200, kinds=("create",), seed=1)
        created = [await asyncio.wait_for(anext(stream), 1) for _ in range(5)]
        assert {e.type for e in created} == {VmEventType.CREATED}
        host.mayhem(200, kinds=("destroy", "power"), seed=2)
        seen: list[VmEvent] = []
        while {VmEventType.DESTROYED, VmEventType.POWER_ON} - {e.type for e in seen}:
            seen.append(await asyncio.wait_for(anext(stream), 1))
        host.stop_mayhem()
        # What mayhem did before it stopped may still be on its way.
        with contextlib.suppress(TimeoutError):
            while True:
                seen.append(await asyncio.wait_for(anext(stream), 0.1))
        listed = {v.uuid for v in await driver.list_vms()}
        everything = created + seen
        destroyed = {e.uuid for e in everything if e.type is VmEventType.DESTROYED}
        made = {e.uuid for e in everything if e.type is VmEventType.CREATED}
        assert destroyed
        assert listed == made - destroyed
    await asyncio.sleep(0)  # the cancelled task ends at its next step
    assert cloud.supervisor.running() == []


async def test_cloud_close_stops_mayhem_and_ends_streams(cloud: SimulatedCloud) -> None:
    host = cloud.add_host("10.0.0.1")
    async with connected(cloud, "10.0.0.1") as driver:
        stream = driver.events()
        host.mayhem(100)
        assert cloud.supervisor.running()
        await cloud.close()
        assert cloud.supervisor.running() == []
        with contextlib.suppress(asyncio.TimeoutError):
            async with asyncio.timeout(1):
                async for _ in stream:
                    pass  # the events mayhem made before the close, then the end


async def test_datastores_are_consumed_and_freed(cloud: SimulatedCloud) -> None:
    cloud.add_host("10.0.0.1", datastores=[SimulatedDatastore("ds", "/var/lib/virt", 100 * GIB)])
    async with connected(cloud, "10.0.0.1") as driver:

        async def free() -> int:
            return (await driver.host_info()).datastores[0].free_bytes

        await driver.configure(vm(1, disk_gib=30))
        await driver.configure(vm(2, disk_gib=30, persistent=True))
        assert await free() == 40 * GIB
        with pytest.raises(DriverFailure, match="no space"):
            await driver.configure(vm(3, disk_gib=50))
        assert await free() == 40 * GIB
        await driver.deconfigure(vm(1, disk_gib=30))
        await driver.deconfigure(vm(2, disk_gib=30, persistent=True))
        # The persistent disk (an instance) outlives its VM.
        assert await free() == 70 * GIB


async def test_invalid_definitions(cloud: SimulatedCloud) -> None:
    cloud.add_host("10.0.0.1")
    async with connected(cloud, "10.0.0.1") as driver:
        elsewhere = RepositoryDisk(
            repository_path="x", datastore="/nowhere", format=DiskFormat.RAW, size_bytes=1
        )
        bad = VirtualMachineDefinition(uuid="u", name="n", cpu=1, ram_mb=1, disks=[elsewhere])
        with pytest.raises(InvalidDefinition, match="no datastore"):
            await driver.configure(bad)


async def test_a_thousand_hosts_of_twenty_vms(cloud: SimulatedCloud) -> None:
    started = time.monotonic()
    for h in range(1000):
        address = f"10.{h // 256}.{h % 256}.1"
        cloud.add_host(address)
        async with connected(cloud, address) as driver:
            for n in range(20):
                await driver.configure(vm(n))
                await driver.power_on(vm(n).uuid)
        # Each configure returns at once: let the loop breathe between hosts.
        await asyncio.sleep(0)
    elapsed = time.monotonic() - started
    assert sum(len(host.vms) for host in cloud.hosts.values()) == 20_000
    assert elapsed < 3, elapsed


def test_registry_gives_the_simulator_for_any_type(cloud: SimulatedCloud) -> None:
    for kind in HypervisorType:
        driver = open_driver(connection("10.0.0.1", kind), simulator=cloud, timeout=5)
        assert isinstance(driver, SimulatorDriver)
        assert driver.timeout == 5


def test_registry_without_the_simulator() -> None:
    with pytest.raises(NotSupported):
        open_driver(connection("10.0.0.1", HypervisorType.VMX_04), timeout=5)
    if importlib.util.find_spec("abiquo_dc.hypervisors.kvm") is None:
        with pytest.raises(NotSupported):
            open_driver(connection("10.0.0.1", HypervisorType.KVM), timeout=5)
    else:
        driver = open_driver(connection("10.0.0.1", HypervisorType.KVM), timeout=5)
        assert type(driver).__name__ == "KvmDriver"
