"""The contract suite every hypervisor driver passes.

How a driver joins: write tests/dc/hypervisors/test_<driver>_contract.py that does

    from tests.dc.hypervisors.contract import *  # noqa: F403

and provides one fixture, `driver_under_test`, yielding a `DriverUnderTest`: the driver,
connected, and a `Host` (see the Protocol below) that lets the suite set up and observe
what it cannot through the driver: a datastore path, a valid definition for this host,
whether a disk file exists. Close the driver (and anything else) when the fixture ends;
the autouse loop guard fails a test that leaves tasks running. Each test removes the
VMs it configured, even when it fails, but a fresh host (or a clean one) per test is
safest.

What the suite expects beyond base.py's docstrings:
- power_on of a running VM, power_off of a stopped one and deconfigure of a missing one
  succeed; reset or pause of a powered-off VM raise WrongState.
- events(), when capabilities.event_stream: the suite calls it, starts consuming it,
  waits `Host.events_settle` seconds (for streams that subscribe lazily), then powers a
  VM on and off, and expects POWER_ON and POWER_OFF for it within `Host.event_timeout`.
- Operations the capabilities deny (pause, shutdown, ...) are skipped, not expected to
  raise. No flag denies copy_disk_to_repository: every driver copies a powered-off VM's
  disk back, and refuses with DiskInRepository to copy over a file there.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

import pytest
from msgspec.structs import replace

from abiquo_dc.hypervisors.base import (
    DiskInRepository,
    Driver,
    InvalidDefinition,
    PowerState,
    VmAlreadyExists,
    VmEvent,
    VmEventType,
    VmNotFound,
    WrongState,
)
from abiquo_dc.protocol.definitions import Nic, VirtualMachineDefinition

__all__ = [
    "DriverUnderTest",
    "Host",
    "test_contract_bad_definition_is_invalid",
    "test_contract_configure_shows_vm_off",
    "test_contract_configure_twice_conflicts",
    "test_contract_copy_to_the_repository_never_replaces",
    "test_contract_deconfigure_removes_vm_and_disk",
    "test_contract_events_for_power_changes",
    "test_contract_get_unknown_vm",
    "test_contract_host_info",
    "test_contract_pause_resume",
    "test_contract_power_on_off",
    "test_contract_reconfigure_while_off",
    "test_contract_reset",
    "test_contract_shutdown",
]


class Host(Protocol):
    """What the suite needs of the host out of band, as each driver's tests provide it."""

    # A datastore path host_info reports, where definitions put their disks.
    datastore: str
    # Seconds to wait after starting to consume events() before acting.
    events_settle: float
    # Seconds an expected event may take to arrive.
    event_timeout: float

    def definition(self) -> VirtualMachineDefinition:
        """A valid definition of a new VM (fresh uuid, name, MAC) with one non-persistent
        repository disk on `datastore`, ready to configure on this host."""
        ...

    def disk_path(self, definition: VirtualMachineDefinition, index: int) -> str:
        """Where disk `index` of the VM lives on the host."""
        ...

    async def disk_exists(self, path: str) -> bool: ...


@dataclass
class DriverUnderTest:
    driver: Driver
    host: Host


@contextlib.asynccontextmanager
async def configured(
    dut: DriverUnderTest, definition: VirtualMachineDefinition | None = None
) -> AsyncIterator[VirtualMachineDefinition]:
    """A configured VM, removed at the end whatever happened."""
    definition = definition or dut.host.definition()
    await dut.driver.configure(definition)
    try:
        yield definition
    finally:
        await dut.driver.deconfigure(definition)


async def state_of(driver: Driver, uuid: str) -> PowerState:
    return (await driver.get_vm(uuid)).power_state


async def test_contract_host_info(driver_under_test: DriverUnderTest) -> None:
    info = await driver_under_test.driver.host_info()
    assert info.name
    assert info.hypervisor_type is driver_under_test.driver.hypervisor_type
    assert info.version
    assert info.cpu_cores >= 1
    assert info.cpu_sockets >= 1
    assert info.ram_bytes > 0
    paths = [d.path for d in info.datastores]
    assert driver_under_test.host.datastore in paths
    for store in info.datastores:
        assert 0 <= store.free_bytes <= store.total_bytes


async def test_contract_configure_shows_vm_off(driver_under_test: DriverUnderTest) -> None:
    driver = driver_under_test.driver
    async with configured(driver_under_test) as vm:
        listed = {v.uuid: v for v in await driver.list_vms()}
        assert vm.uuid in listed
        assert listed[vm.uuid].power_state is PowerState.OFF
        got = await driver.get_vm(vm.uuid)
        assert (got.uuid, got.name, got.power_state) == (vm.uuid, vm.name, PowerState.OFF)
        assert (got.cpu, got.ram_mb) == (vm.cpu, vm.ram_mb)


async def test_contract_configure_twice_conflicts(driver_under_test: DriverUnderTest) -> None:
    async with configured(driver_under_test) as vm:
        with pytest.raises(VmAlreadyExists):
            await driver_under_test.driver.configure(vm)


async def test_contract_copy_to_the_repository_never_replaces(
    driver_under_test: DriverUnderTest,
) -> None:
    driver = driver_under_test.driver
    async with configured(driver_under_test) as vm:
        destination = f"1/instance-{vm.uuid}/disk"
        await driver.copy_disk_to_repository(vm, 0, destination)
        with pytest.raises(DiskInRepository):
            await driver.copy_disk_to_repository(vm, 0, destination)


async def test_contract_power_on_off(driver_under_test: DriverUnderTest) -> None:
    driver = driver_under_test.driver
    async with configured(driver_under_test) as vm:
        await driver.power_on(vm.uuid)
        assert await state_of(driver, vm.uuid) is PowerState.ON
        await driver.power_on(vm.uuid)  # the goal is reached already: no error
        assert await state_of(driver, vm.uuid) is PowerState.ON
        await driver.power_off(vm.uuid)
        assert await state_of(driver, vm.uuid) is PowerState.OFF
        await driver.power_off(vm.uuid)
        assert await state_of(driver, vm.uuid) is PowerState.OFF


async def test_contract_pause_resume(driver_under_test: DriverUnderTest) -> None:
    driver = driver_under_test.driver
    if not driver.capabilities.pause:
        pytest.skip("the driver cannot pause")
    async with configured(driver_under_test) as vm:
        with pytest.raises(WrongState):
            await driver.pause(vm.uuid)
        await driver.power_on(vm.uuid)
        await driver.pause(vm.uuid)
        assert await state_of(driver, vm.uuid) is PowerState.PAUSED
        await driver.resume(vm.uuid)
        assert await state_of(driver, vm.uuid) is PowerState.ON
        await driver.power_off(vm.uuid)


async def test_contract_reset(driver_under_test: DriverUnderTest) -> None:
    driver = driver_under_test.driver
    if not driver.capabilities.reset:
        pytest.skip("the driver cannot reset")
    async with configured(driver_under_test) as vm:
        with pytest.raises(WrongState):
            await driver.reset(vm.uuid)
        await driver.power_on(vm.uuid)
        await driver.reset(vm.uuid)
        assert await state_of(driver, vm.uuid) is PowerState.ON
        await driver.power_off(vm.uuid)


async def test_contract_shutdown(driver_under_test: DriverUnderTest) -> None:
    driver = driver_under_test.driver
    if not driver.capabilities.shutdown:
        pytest.skip("the driver cannot shut down through the guest")
    async with configured(driver_under_test) as vm:
        await driver.power_on(vm.uuid)
        await driver.shutdown(vm.uuid)
        assert await state_of(driver, vm.uuid) is PowerState.OFF


async def test_contract_reconfigure_while_off(driver_under_test: DriverUnderTest) -> None:
    driver = driver_under_test.driver
    async with configured(driver_under_test) as vm:
        bigger = replace(vm, cpu=vm.cpu + 1, ram_mb=vm.ram_mb * 2)
        await driver.reconfigure(bigger)
        got = await driver.get_vm(vm.uuid)
        assert (got.cpu, got.ram_mb) == (bigger.cpu, bigger.ram_mb)
        assert got.power_state is PowerState.OFF


async def test_contract_deconfigure_removes_vm_and_disk(
    driver_under_test: DriverUnderTest,
) -> None:
    driver, host = driver_under_test.driver, driver_under_test.host
    vm = host.definition()
    await driver.configure(vm)
    disk = host.disk_path(vm, 0)
    assert await host.disk_exists(disk)
    await driver.deconfigure(vm)
    assert vm.uuid not in {v.uuid for v in await driver.list_vms()}
    with pytest.raises(VmNotFound):
        await driver.get_vm(vm.uuid)
    assert not await host.disk_exists(disk)
    await driver.deconfigure(vm)  # already gone: no error


async def test_contract_get_unknown_vm(driver_under_test: DriverUnderTest) -> None:
    with pytest.raises(VmNotFound):
        await driver_under_test.driver.get_vm("00000000-0000-4000-8000-00000000dead")


async def test_contract_bad_definition_is_invalid(driver_under_test: DriverUnderTest) -> None:
    driver, good = driver_under_test.driver, driver_under_test.host.definition()
    mac = good.nics[0].mac if good.nics else "52:54:00:12:34:56"
    bad = [
        replace(good, cpu=0),
        replace(good, ram_mb=0),
        replace(good, nics=[Nic(mac=mac), Nic(mac=mac)]),
    ]
    for definition in bad:
        with pytest.raises(InvalidDefinition):
            await driver.configure(definition)
    assert good.uuid not in {v.uuid for v in await driver.list_vms()}


async def test_contract_events_for_power_changes(driver_under_test: DriverUnderTest) -> None:
    driver, host = driver_under_test.driver, driver_under_test.host
    if not driver.capabilities.event_stream:
        pytest.skip("the driver has no event stream (the monitor polls it)")
    async with configured(driver_under_test) as vm:
        stream = driver.events()
        seen: list[VmEvent] = []
        done = asyncio.Event()

        def wanted(events: list[VmEvent]) -> bool:
            kinds = {e.type for e in events if e.uuid == vm.uuid}
            return {VmEventType.POWER_ON, VmEventType.POWER_OFF} <= kinds

        consumer = asyncio.create_task(_collect(stream, seen, done, wanted))
        try:
            await asyncio.sleep(host.events_settle)
            await driver.power_on(vm.uuid)
            await driver.power_off(vm.uuid)
            await asyncio.wait_for(done.wait(), host.event_timeout)
        finally:
            consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await consumer
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()
        ours = [e.type for e in seen if e.uuid == vm.uuid]
        assert ours.index(VmEventType.POWER_ON) < len(ours) - 1 - ours[::-1].index(
            VmEventType.POWER_OFF
        )


async def _collect(
    stream: AsyncIterator[VmEvent],
    seen: list[VmEvent],
    done: asyncio.Event,
    wanted: Callable[[list[VmEvent]], bool],
) -> None:
    async for event in stream:
        seen.append(event)
        if wanted(seen):
            done.set()
            return
