"""The contract suite, on the simulator: a fresh simulated cloud and host per test."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator

import pytest

from abiquo_dc.hypervisors.simulator import (
    SimulatedCloud,
    SimulatedHost,
    SimulatorDriver,
    disk_names,
)
from abiquo_dc.protocol.definitions import (
    DiskFormat,
    HypervisorConnection,
    HypervisorType,
    Nic,
    RepositoryDisk,
    VirtualMachineDefinition,
)
from tests.dc.hypervisors.contract import *  # noqa: F403
from tests.dc.hypervisors.contract import DriverUnderTest

_macs = itertools.count(1)


class SimHost:
    """The contract's Host, seen from inside the simulated host."""

    datastore = "/var/lib/virt"
    events_settle = 0.0
    event_timeout = 2.0

    def __init__(self, host: SimulatedHost) -> None:
        self.host = host

    def definition(self) -> VirtualMachineDefinition:
        vm = str(uuid.uuid4())
        n = next(_macs)
        return VirtualMachineDefinition(
            uuid=vm,
            name=f"vm-{vm[:8]}",
            cpu=1,
            ram_mb=512,
            disks=[
                RepositoryDisk(
                    repository_path="1/templates/disk.qcow2",
                    datastore=self.datastore,
                    format=DiskFormat.QCOW2_SPARSE,
                    size_bytes=10 * 1024**3,
                )
            ],
            nics=[Nic(mac=f"52:54:00:00:{n >> 8 & 0xFF:02x}:{n & 0xFF:02x}")],
        )

    def disk_path(self, definition: VirtualMachineDefinition, index: int) -> str:
        return disk_names(definition)[index]

    async def disk_exists(self, path: str) -> bool:
        return self.host.file_exists(path)


@pytest.fixture
async def driver_under_test() -> AsyncIterator[DriverUnderTest]:
    cloud = SimulatedCloud()
    host = cloud.add_host("10.0.0.1")
    driver = SimulatorDriver(
        HypervisorConnection(type=HypervisorType.KVM, address="10.0.0.1"), cloud=cloud, timeout=2
    )
    await driver.connect()
    try:
        yield DriverUnderTest(driver, SimHost(host))
    finally:
        await driver.close()
        await cloud.close()
