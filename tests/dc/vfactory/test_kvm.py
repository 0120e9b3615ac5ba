"""VM tasks from a test playing central, over the real RabbitMQ, to a whole datacenter
whose KVM driver works through a real AIM over libvirt's test driver. The datacenter's
repository is the AIM's, as hosts and datacenter share one NFS repository."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt
import pytest

from abiquo_central.link import CentralLink
from abiquo_dc.app import Datacenter, build_datacenter
from abiquo_dc.protocol.definitions import DiskFormat, RepositoryDisk, VirtualMachineDefinition
from abiquo_dc.protocol.jobs import (
    Job,
    JobNotification,
    JobState,
    JobType,
    Snapshot,
    VirtualFactoryTask,
)
from abiquo_dc.protocol.templates import TemplateStatus, TemplateStatusChanged
from abiquo_dc.settings import DatacenterSettings, DCSettings, RepositorySettings
from abiquo_runtime.messaging.amqp import AmqpTransport
from abiquo_runtime.settings import HttpSettings, RabbitSettings, ShutdownSettings
from abiquo_runtime.shutdown import run_stages
from tests.dc.hypervisors.kvm_host import MARK_FILE, KvmHost
from tests.dc.hypervisors.kvm_host import kvm_host as kvm_host
from tests.dc.hypervisors.kvm_host import private_libvirtd as private_libvirtd
from tests.dc.vfactory.harness import fast_settings
from tests.link.conftest import Received

pytestmark = pytest.mark.rabbitmq

FINAL = (JobState.DONE, JobState.FAILED)


@dataclass
class Central:
    """The test's side: sends tasks to the DC and sees every notification."""

    link: CentralLink
    received: Received
    dc_uuid: str
    host: KvmHost

    def notifications(self, task: VirtualFactoryTask | None = None) -> list[JobNotification]:
        return [
            m
            for m in self.received.messages
            if isinstance(m, JobNotification) and (task is None or m.task_id == task.task_id)
        ]

    async def run(
        self, *jobs: tuple[JobType, VirtualMachineDefinition], **extra: Any
    ) -> list[JobNotification]:
        """Send a task of these jobs and wait until each has its final notification."""
        task = VirtualFactoryTask(
            task_id=f"task-{uuid.uuid4().hex[:12]}",
            jobs=[
                Job(
                    id=f"job-{uuid.uuid4().hex[:12]}",
                    type=kind,
                    connection=self.host.connection,
                    definition=d,
                    **extra,
                )
                for kind, d in jobs
            ],
        )
        await self.send(task)
        return await self.finished(task)

    async def send(self, task: VirtualFactoryTask) -> None:
        await self.link.send(self.dc_uuid, "virtualfactory", task)

    async def finished(
        self, task: VirtualFactoryTask, timeout: float = 30.0
    ) -> list[JobNotification]:
        ids = {job.id for job in task.jobs}

        def complete(_: object) -> bool:
            ended = {n.job_id for n in self.notifications(task) if n.state in FINAL}
            return ids <= ended

        await self.received.wait_for(complete, timeout=timeout)
        return self.notifications(task)

    async def domain(self, vm: str) -> tuple[int, int] | None:
        """The domain's (state, vcpus) as libvirt has it, None when there is none."""

        def look(conn: libvirt.virConnect) -> tuple[int, int] | None:
            try:
                dom = conn.lookupByUUIDString(vm)
            except libvirt.libvirtError:
                return None
            state, _, _, vcpus, _ = dom.info()
            return state, vcpus

        return await self.host.libvirt.call(look, self.host.libvirt.conn)


@pytest.fixture
async def central(kvm_host: KvmHost, rabbitmq_url: str, tmp_path: Path) -> AsyncIterator[Central]:
    dc_uuid = str(uuid.uuid4())
    received = Received()
    link = CentralLink(
        transport=AmqpTransport(rabbitmq_url, connection_name=f"test-central {dc_uuid}"),
        on_message=received.add,
        retry_delay=0.05,
    )
    await link.start()
    await link.accept()
    settings = DCSettings(
        datacenter=DatacenterSettings(
            uuid=dc_uuid, name="dc-kvm", state_dir=str(tmp_path / "dc"), heartbeat_interval=1
        ),
        http=HttpSettings(host="127.0.0.1", port=0),
        rabbitmq=RabbitSettings(url=rabbitmq_url),
        repository=RepositorySettings(path=str(kvm_host.repository), mark_file=MARK_FILE),
        shutdown=ShutdownSettings(drain_timeout=5, close_timeout=5, stop_accepting_timeout=1),
        vfactory=fast_settings(driver_timeout=10.0),
    )
    dc: Datacenter = build_datacenter(
        settings,
        transport=AmqpTransport(rabbitmq_url, connection_name=f"test-dc {dc_uuid}"),
        dc_uuid=dc_uuid,
    )
    await dc.start()
    try:
        yield Central(link, received, dc_uuid, kvm_host)
    finally:
        await run_stages(dc.shutdown_stages())
        await link.close()


def states(sent: list[JobNotification]) -> list[tuple[str, str]]:
    return [(n.job_type.value, n.state.value) for n in sent]


RUNNING, PAUSED, SHUTOFF = (
    libvirt.VIR_DOMAIN_RUNNING,
    libvirt.VIR_DOMAIN_PAUSED,
    libvirt.VIR_DOMAIN_SHUTOFF,
)


async def test_a_vm_lives_its_whole_life_on_kvm(central: Central) -> None:
    host = central.host
    d = host.definition(n_disks=2)
    sent = await central.run((JobType.CONFIGURE, d), (JobType.POWER_ON, d))
    assert states(sent) == [
        ("CONFIGURE", "START"),
        ("CONFIGURE", "DONE"),
        ("POWER_ON", "START"),
        ("POWER_ON", "DONE"),
    ]
    assert await central.domain(d.uuid) == (RUNNING, 1)
    # Both disks were copied to the datastore by the AIM.
    assert sorted(p.name for p in host.datastore.iterdir()) == sorted([d.uuid, f"{d.uuid}-1"])

    await central.run((JobType.POWER_OFF, d))
    assert await central.domain(d.uuid) == (SHUTOFF, 1)
    bigger = VirtualMachineDefinition(
        uuid=d.uuid, name=d.name, cpu=2, ram_mb=512, disks=d.disks, nics=d.nics
    )
    await central.run((JobType.RECONFIGURE, bigger))
    assert await central.domain(d.uuid) == (SHUTOFF, 2)
    await central.run((JobType.POWER_ON, bigger))
    await central.run((JobType.RESET, bigger))
    assert await central.domain(d.uuid) == (RUNNING, 2)
    await central.run((JobType.PAUSE, bigger))
    assert await central.domain(d.uuid) == (PAUSED, 2)
    await central.run((JobType.RESUME, bigger))
    assert await central.domain(d.uuid) == (RUNNING, 2)
    sent = await central.run((JobType.POWER_OFF, bigger), (JobType.DECONFIGURE, bigger))
    assert [s for _, s in states(sent)] == ["START", "DONE", "START", "DONE"]
    assert await central.domain(d.uuid) is None
    assert list(host.datastore.iterdir()) == []
    # Every notification of every task: each job started once and ended once.
    everything = central.notifications()
    assert all(n.dc_uuid == central.dc_uuid for n in everything)
    per_job: dict[str, list[str]] = {}
    for n in everything:
        per_job.setdefault(n.job_id, []).append(n.state.value)
    assert all(v == ["START", "DONE"] for v in per_job.values())


async def test_the_same_task_twice_makes_one_domain(central: Central) -> None:
    d = central.host.definition()
    task = VirtualFactoryTask(
        task_id=f"task-{uuid.uuid4().hex[:12]}",
        jobs=[
            Job(
                id=f"job-{uuid.uuid4().hex}",
                type=kind,
                connection=central.host.connection,
                definition=d,
            )
            for kind in (JobType.CONFIGURE, JobType.POWER_ON)
        ],
    )
    await asyncio.gather(central.send(task), central.send(task))
    await central.finished(task)
    await central.send(task)
    await asyncio.sleep(1.0)
    sent = central.notifications(task)
    assert [s for _, s in states(sent)].count("DONE") == 2
    assert len(sent) == 4

    def named(conn: libvirt.virConnect) -> list[str]:
        return [dom.name() for dom in conn.listAllDomains(0) if dom.name() == d.name]

    assert await central.host.libvirt.call(named, central.host.libvirt.conn) == [d.name]


async def test_a_snapshot_with_a_name_becomes_a_template_of_its_enterprise(
    central: Central,
) -> None:
    host = central.host
    d = host.definition()
    await central.run((JobType.CONFIGURE, d))
    directory = f"instance-{uuid.uuid4().hex[:12]}"
    snapshot = Snapshot(
        repository_path=f"1/{directory}/disk",
        enterprise_id="1",
        template_name="golden",
        template_description="a copy of " + d.name,
    )
    sent = await central.run((JobType.SNAPSHOT, d), snapshot=snapshot)
    assert states(sent) == [("SNAPSHOT", "START"), ("SNAPSHOT", "DONE")]
    template = sent[-1].template
    assert template is not None
    assert (template.ovf_id, template.name, template.disk_path) == (
        f"{directory}/disk.ovf",
        "golden",
        f"1/{directory}/disk",
    )
    # The AIM's copy, read by the datacenter's AM with qemu-img.
    copy = host.repository / "1" / directory / "disk"
    source = d.disks[0]
    assert isinstance(source, RepositoryDisk)
    assert copy.read_bytes() == (host.repository / source.repository_path).read_bytes()
    assert template.disk_format is DiskFormat.RAW
    assert template.disk_file_size == copy.stat().st_size
    assert (host.repository / "1" / directory / "disk.ovf").is_file()

    def announced(_: object) -> bool:
        return any(
            isinstance(m, TemplateStatusChanged)
            and m.ovf_id == template.ovf_id
            and m.status is TemplateStatus.DOWNLOAD
            for m in central.received.messages
        )

    # The AM tells central of it as of any template, besides the job's DONE.
    await central.received.wait_for(announced, timeout=10)
    await central.run((JobType.DECONFIGURE, d))
