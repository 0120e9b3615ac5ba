"""The contract suite, on the KVM driver against a real AIM over libvirt's test driver."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from abiquo_dc.hypervisors.domain_xml import disk_path
from abiquo_dc.protocol.definitions import VirtualMachineDefinition
from tests.dc.hypervisors.contract import *  # noqa: F403
from tests.dc.hypervisors.contract import DriverUnderTest
from tests.dc.hypervisors.test_kvm import AimHost, make_driver, running_aim


class KvmHost:
    """The contract's Host: the fake KVM host's datastore, seen from the test."""

    events_settle = 0.0
    event_timeout = 5.0

    def __init__(self, aim_host: AimHost) -> None:
        self.aim_host = aim_host
        self.datastore = str(aim_host.datastore)

    def definition(self) -> VirtualMachineDefinition:
        return self.aim_host.definition()

    def disk_path(self, definition: VirtualMachineDefinition, index: int) -> str:
        return disk_path(definition, index)

    async def disk_exists(self, path: str) -> bool:
        return await asyncio.to_thread(Path(path).exists)


@pytest.fixture
async def driver_under_test(tmp_path: Path) -> AsyncIterator[DriverUnderTest]:
    async with running_aim(tmp_path) as aim_host:
        driver = make_driver(aim_host)
        await driver.connect()
        try:
            yield DriverUnderTest(driver, KvmHost(aim_host))
        finally:
            await driver.close()
