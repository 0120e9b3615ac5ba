"""The contract suite, on the KVM driver against a real AIM over libvirt's test driver.

Each test runs three times, once per way the driver reaches the host's domains:

- aim: through the AIM's thrift methods (the AIM reports no libvirt URI; its test
  driver is on a file, private to its connection);
- libvirt: over libvirt itself, on the URI the AIM reports (the private libvirtd's test
  driver, over its unix socket, shared with the AIM);
- libvirt-tcp: over libvirt on a remote TCP URI given to the driver (test+tcp://), the
  same daemon.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from abiquo_dc.hypervisors.domain_xml import disk_path
from abiquo_dc.protocol.definitions import VirtualMachineDefinition
from tests.aim.e2e_host import Libvirtd
from tests.dc.hypervisors.contract import *  # noqa: F403
from tests.dc.hypervisors.contract import DriverUnderTest
from tests.dc.hypervisors.kvm_host import KvmHost, running_kvm_host, tcp_uri
from tests.dc.hypervisors.kvm_host import private_libvirtd as private_libvirtd


class ContractHost:
    """The contract's Host: the KVM host's datastore, seen from the test."""

    events_settle = 0.0
    event_timeout = 5.0

    def __init__(self, host: KvmHost) -> None:
        self.kvm_host = host
        self.datastore = str(host.datastore)

    def definition(self) -> VirtualMachineDefinition:
        return self.kvm_host.definition()

    def disk_path(self, definition: VirtualMachineDefinition, index: int) -> str:
        return disk_path(definition, index)

    async def disk_exists(self, path: str) -> bool:
        return await asyncio.to_thread(Path(path).exists)


@pytest.fixture(params=["aim", "libvirt", "libvirt-tcp"])
def channel(request: pytest.FixtureRequest) -> tuple[str, Libvirtd | None]:
    """The way to the domains, and the libvirtd it needs. A plain fixture: starting the
    daemon blocks, which an async fixture would do on the loop."""
    name: str = request.param
    if name == "aim":
        return name, None
    libvirtd: Libvirtd = request.getfixturevalue("private_libvirtd")
    return name, libvirtd


@pytest.fixture
async def driver_under_test(
    channel: tuple[str, Libvirtd | None], tmp_path: Path
) -> AsyncIterator[DriverUnderTest]:
    name, libvirtd = channel
    options: dict[str, Any] = {}
    if name == "libvirt-tcp":
        assert libvirtd is not None
        options["libvirt_uri"] = tcp_uri(libvirtd)
    async with running_kvm_host(tmp_path, libvirtd=libvirtd) as host:
        driver = host.driver(**options)
        await driver.connect()
        try:
            assert driver.domains.kind == name.split("-")[0]
            yield DriverUnderTest(driver, ContractHost(host))
        finally:
            await driver.close()
