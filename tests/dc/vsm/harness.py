"""A Virtual System Monitor over simulated hosts, its events collected, for tests."""

from __future__ import annotations

import asyncio
import contextlib
import uuid as uuidlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis.asyncio as redis

from abiquo_dc.bus import Bus
from abiquo_dc.hypervisors.base import Driver
from abiquo_dc.hypervisors.simulator import SimulatedCloud, SimulatorDriver
from abiquo_dc.protocol.definitions import (
    HypervisorConnection,
    HypervisorType,
    VirtualMachineDefinition,
)
from abiquo_dc.protocol.envelope import Message
from abiquo_dc.protocol.monitoring import MonitoredHost, MonitoringStateLost, VmStateChanged
from abiquo_dc.settings import VsmSettings
from abiquo_dc.vsm.redis_store import RedisStore
from abiquo_dc.vsm.service import VirtualSystemMonitor
from abiquo_dc.vsm.store import MemoryStore, VsmStore

REDIS_URL = "redis://127.0.0.1:6379/0"

FAST = VsmSettings(
    poll_interval=0.2,
    resync_interval=30.0,
    grace=0.5,
    reconnect_initial=0.05,
    reconnect_max=0.2,
    move_window=0.3,
    check_interval=0.1,
    driver_timeout=2.0,
)


def vm(name: str | None = None) -> VirtualMachineDefinition:
    uuid = str(uuidlib.uuid4())
    return VirtualMachineDefinition(uuid=uuid, name=name or f"vm-{uuid[:8]}", cpu=1, ram_mb=128)


def kvm(address: str) -> MonitoredHost:
    return MonitoredHost(address=address, type=HypervisorType.KVM)


@dataclass
class Vsm:
    service: VirtualSystemMonitor
    cloud: SimulatedCloud
    store: VsmStore
    sent: list[Message] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def events(self, vm_uuid: str | None = None) -> list[tuple[str, str]]:
        """(event, host) of each VmStateChanged sent, for one VM or all."""
        return [
            (m.event.value, m.host)
            for m in self.sent
            if isinstance(m, VmStateChanged) and vm_uuid in (None, m.vm_uuid)
        ]

    def lost(self) -> int:
        return sum(isinstance(m, MonitoringStateLost) for m in self.sent)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        try:
            async with asyncio.timeout(timeout), self.changed:
                await self.changed.wait_for(predicate)
        except TimeoutError:
            raise AssertionError(f"not within {timeout}s; events so far: {self.events()}") from None

    async def quiet(self, seconds: float = 0.5) -> None:
        """Let anything still coming arrive."""
        await asyncio.sleep(seconds)


@contextlib.asynccontextmanager
async def running_vsm(
    state_dir: Path,
    *,
    kind: str = "memory",
    prefix: str = "",
    cloud: SimulatedCloud | None = None,
    settings: VsmSettings = FAST,
    keep: bool = False,
) -> AsyncIterator[Vsm]:
    """`keep`: leave the Redis keys behind, for a VSM started again on them."""
    cloud = cloud or SimulatedCloud()
    store: VsmStore
    if kind == "memory":
        store = MemoryStore()
    else:
        store = RedisStore(REDIS_URL, prefix=prefix, dc_uuid="dc-test")
    bus = Bus(name="test.bus")
    holder: list[Vsm] = []

    async def publish(message: Message) -> None:
        async with holder[0].changed:
            holder[0].sent.append(message)
            holder[0].changed.notify_all()

    def opener(c: HypervisorConnection) -> Driver:
        return SimulatorDriver(c, cloud=cloud, timeout=settings.driver_timeout)

    service = VirtualSystemMonitor(
        bus=bus,
        dc_uuid="dc-test",
        store=lambda: store,
        opener=opener,
        publish=publish,
        state_dir=state_dir,
        settings=settings,
    )
    holder.append(Vsm(service, cloud, store))
    await service.start()
    try:
        await service.wait_running(5)
        yield holder[0]
    finally:
        await service.stop()
        await bus.close()
        await cloud.close()
        if kind == "redis" and not keep:
            client = redis.Redis.from_url(REDIS_URL)
            keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
            if keys:
                await client.delete(*keys)
            await client.aclose()
