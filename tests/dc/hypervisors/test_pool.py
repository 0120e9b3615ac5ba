"""Connected drivers shared per host: one connect for concurrent callers, a fresh one
after a discard, idle ones closed."""

from __future__ import annotations

import asyncio

import pytest

from abiquo_dc.hypervisors.base import Driver, HostUnreachable
from abiquo_dc.hypervisors.pool import DriverPool
from abiquo_dc.hypervisors.simulator import SimulatedCloud, SimulatorDriver
from abiquo_dc.protocol.definitions import HypervisorConnection, HypervisorType


def conn(address: str) -> HypervisorConnection:
    return HypervisorConnection(type=HypervisorType.KVM, address=address)


@pytest.fixture
async def cloud() -> SimulatedCloud:
    cloud = SimulatedCloud()
    cloud.add_host("10.0.0.1")
    cloud.add_host("10.0.0.2")
    return cloud


class Counting:
    def __init__(self, cloud: SimulatedCloud) -> None:
        self.cloud = cloud
        self.opened: list[SimulatorDriver] = []

    def __call__(self, c: HypervisorConnection) -> Driver:
        driver = SimulatorDriver(c, cloud=self.cloud, timeout=1.0)
        self.opened.append(driver)
        return driver


async def test_callers_at_once_share_one_connect(cloud: SimulatedCloud) -> None:
    opener = Counting(cloud)
    pool = DriverPool(opener)
    cloud.host("10.0.0.1").delay("connect", 0.05)
    drivers = await asyncio.gather(*(pool.get(conn("10.0.0.1")) for _ in range(10)))
    assert len(set(map(id, drivers))) == 1 and len(opener.opened) == 1
    assert await pool.get(conn("10.0.0.2")) is not drivers[0]
    assert len(pool) == 2
    await pool.close()
    assert len(pool) == 0
    await cloud.close()


class SlowToFail(SimulatorDriver):
    async def connect(self) -> None:
        await asyncio.sleep(0.05)
        raise HostUnreachable("refused, eventually")


async def test_a_failed_connect_is_not_kept(cloud: SimulatedCloud) -> None:
    opened: list[HypervisorConnection] = []

    def opener(c: HypervisorConnection) -> Driver:
        opened.append(c)
        if len(opened) == 1:
            return SlowToFail(c, cloud=cloud, timeout=1.0)
        return SimulatorDriver(c, cloud=cloud, timeout=1.0)

    pool = DriverPool(opener)
    # The three callers wait on the one connect, and share its failure.
    results = await asyncio.gather(
        *(pool.get(conn("10.0.0.1")) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, HostUnreachable) for r in results)
    assert len(pool) == 0
    await pool.get(conn("10.0.0.1"))  # the next caller connects afresh
    assert len(opened) == 2
    await pool.close()
    await cloud.close()


async def test_discard_and_idle_drivers_are_closed(cloud: SimulatedCloud) -> None:
    opener = Counting(cloud)
    pool = DriverPool(opener, idle_timeout=0.0)
    first = await pool.get(conn("10.0.0.1"))
    await pool.discard(conn("10.0.0.1"))
    second = await pool.get(conn("10.0.0.1"))
    assert second is not first
    with pytest.raises(HostUnreachable):
        await first.host_info()  # closed
    await asyncio.sleep(0.01)
    assert await pool.close_idle() == 1
    assert len(pool) == 0
    await cloud.close()
