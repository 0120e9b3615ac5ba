"""A Virtualization Manager over the simulator, its notifications collected, for tests."""

from __future__ import annotations

import asyncio
import contextlib
import uuid as uuidlib
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from abiquo_dc.bus import Bus
from abiquo_dc.hypervisors.base import Driver
from abiquo_dc.hypervisors.simulator import SimulatedCloud, SimulatorDriver
from abiquo_dc.protocol.definitions import (
    DiskFormat,
    HypervisorConnection,
    HypervisorType,
    Nic,
    RepositoryDisk,
    VirtualMachineDefinition,
)
from abiquo_dc.protocol.jobs import Job, JobNotification, JobState, JobType, VirtualFactoryTask
from abiquo_dc.settings import VirtualFactorySettings
from abiquo_dc.vfactory.service import VirtualFactory

DATASTORE = "/var/lib/virt"
GIB = 1024**3


def definition(
    vm: str | None = None,
    *,
    disks: int = 1,
    fmt: DiskFormat = DiskFormat.QCOW2_SPARSE,
    cpu: int = 1,
    nics: Iterable[Nic] = (),
) -> VirtualMachineDefinition:
    uuid = vm or str(uuidlib.uuid4())
    return VirtualMachineDefinition(
        uuid=uuid,
        name=f"vm-{uuid[:8]}",
        cpu=cpu,
        ram_mb=256,
        disks=[
            RepositoryDisk(
                repository_path=f"1/template/disk{i}.qcow2",
                datastore=DATASTORE,
                format=fmt,
                size_bytes=GIB,
            )
            for i in range(disks)
        ],
        nics=list(nics),
    )


def connection(address: str = "10.0.0.1") -> HypervisorConnection:
    return HypervisorConnection(type=HypervisorType.KVM, address=address)


def job(
    kind: JobType,
    d: VirtualMachineDefinition,
    *,
    address: str = "10.0.0.1",
    **fields: object,
) -> Job:
    return Job(
        id=f"{kind.value.lower()}-{uuidlib.uuid4().hex[:8]}",
        type=kind,
        connection=connection(address),
        definition=d,
        **fields,  # type: ignore[arg-type]
    )


def task(*jobs: Job, dependent: bool = True, rollback: bool = True) -> VirtualFactoryTask:
    return VirtualFactoryTask(
        task_id=f"task-{uuidlib.uuid4().hex[:12]}",
        jobs=list(jobs),
        dependent=dependent,
        rollback=rollback,
    )


def deploy(d: VirtualMachineDefinition, address: str = "10.0.0.1") -> VirtualFactoryTask:
    return task(
        job(JobType.CONFIGURE, d, address=address), job(JobType.POWER_ON, d, address=address)
    )


def states(sent: list[JobNotification], task_id: str | None = None) -> list[tuple[str, str]]:
    """(job type, state) of each notification, in the order they were confirmed."""
    return [
        (n.job_type.value, n.state.value) for n in sent if task_id is None or n.task_id == task_id
    ]


@dataclass
class Harness:
    factory: VirtualFactory
    bus: Bus
    cloud: SimulatedCloud
    state_dir: Path
    sent: list[JobNotification] = field(default_factory=list)
    # Drivers opened, by host address: how often the pool connected.
    opened: list[str] = field(default_factory=list)

    async def run(self, t: VirtualFactoryTask) -> list[JobNotification]:
        """Hand `t` over as the link does; the notifications about it that went out."""
        await self.bus.request(t, timeout=None)
        return [n for n in self.sent if n.task_id == t.task_id]


def fast_settings(**overrides: object) -> VirtualFactorySettings:
    base: dict[str, object] = {"attempts": 3, "retry_initial": 0.01, "retry_max": 0.05}
    base.update(overrides)
    return VirtualFactorySettings(**base)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def running_factory(
    state_dir: Path,
    *,
    cloud: SimulatedCloud | None = None,
    settings: VirtualFactorySettings | None = None,
    sent: list[JobNotification] | None = None,
    publish: Callable[[JobNotification], object] | None = None,
    hosts: Iterable[str] = ("10.0.0.1",),
    prepare_bus: Callable[[Bus], object] | None = None,
) -> AsyncIterator[Harness]:
    """A running VirtualFactory on the simulator; stopped (not finished) on the way out.

    `prepare_bus` is given the bus before the factory starts: what it serves there is
    there for the tasks the factory resumes as it starts."""
    own_cloud = cloud is None
    cloud = cloud or SimulatedCloud()
    for address in hosts:
        if address not in cloud.hosts:
            cloud.add_host(address)
    bus = Bus(name="test.bus")
    if prepare_bus is not None:
        prepare_bus(bus)
    collected: list[JobNotification] = [] if sent is None else sent
    opened: list[str] = []

    async def confirm(notification: JobNotification) -> None:
        if publish is not None:
            outcome = publish(notification)
            if asyncio.iscoroutine(outcome):
                await outcome
        collected.append(notification)

    def opener(c: HypervisorConnection) -> Driver:
        opened.append(c.address)
        return SimulatorDriver(c, cloud=cloud, timeout=2.0)

    factory = VirtualFactory(
        bus=bus,
        dc_uuid="dc-test",
        state_dir=state_dir,
        publish=confirm,
        opener=opener,
        settings=settings or fast_settings(),
    )
    await factory.start()
    try:
        await factory.wait_running(5.0)
        yield Harness(factory, bus, cloud, state_dir, collected, opened)
    finally:
        await factory.stop()
        await bus.close()
        if own_cloud:
            await cloud.close()


FINAL = {JobState.DONE, JobState.FAILED, JobState.ROLLBACK_DONE, JobState.ROLLBACK_FAILED}
