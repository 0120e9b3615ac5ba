"""abiquo-dc killed with SIGKILL in the middle of deploys, and started again: every deploy
is finished (or rolled back), no domain is made twice, every job ends once.

The DC is a real process over the real RabbitMQ; its KVM host is a real AIM (in this
test's process, served by its loop, so the test never blocks) over libvirt's test driver
in the private libvirtd. The template is big enough (32 MiB, not sparse) that copies are
still running when the first deploy reports DONE: that is when the DC is killed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import libvirt
import pytest

from abiquo_central.link import CentralLink
from abiquo_dc.protocol.definitions import DiskFormat, RepositoryDisk
from abiquo_dc.protocol.jobs import (
    Job,
    JobNotification,
    JobState,
    JobType,
    VirtualFactoryTask,
)
from abiquo_dc.protocol.messages import Heartbeat, ServiceState
from abiquo_runtime.messaging.amqp import AmqpTransport
from tests.cli.test_all_in_one import free_port
from tests.dc.hypervisors.kvm_host import KvmHost
from tests.dc.hypervisors.kvm_host import kvm_host as kvm_host
from tests.dc.hypervisors.kvm_host import private_libvirtd as private_libvirtd
from tests.link.conftest import Received

pytestmark = pytest.mark.rabbitmq

BIG = "1/templates/big.raw"
DEPLOYS = 16
FINAL = (JobState.DONE, JobState.FAILED)


class DcProcess:
    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        env = {**os.environ, "ABIQUO_LOG__FORMAT": "json"}
        env.pop("NOTIFY_SOCKET", None)
        with self.log.open("ab") as out:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "abiquo_dc",
                "--config",
                str(self.config),
                env=env,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=out,
            )

    async def kill(self, sig: int = signal.SIGKILL) -> int:
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(sig)
        return await asyncio.wait_for(self.process.wait(), 30)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@pytest.fixture
async def central(rabbitmq_url: str) -> AsyncIterator[tuple[CentralLink, Received]]:
    received = Received()
    link = CentralLink(
        transport=AmqpTransport(rabbitmq_url, connection_name="test-central crash"),
        on_message=received.add,
        retry_delay=0.05,
    )
    await link.start()
    await link.accept()
    try:
        yield link, received
    finally:
        await link.close()


def _big_template(path: Path) -> None:
    # Random bytes: a copy that keeps sparse files sparse must still move every byte.
    with path.open("wb") as f:
        for _ in range(32):
            f.write(os.urandom(1024 * 1024))


async def running_since(received: Received, dc_uuid: str, after: int, timeout: float) -> int:
    """Wait for a heartbeat of a run of the DC (a new started_at) whose vfactory runs."""

    def ready(messages: list[object]) -> bool:
        return any(
            isinstance(m, Heartbeat)
            and m.dc_uuid == dc_uuid
            and m.services.get("virtualfactory") is ServiceState.RUNNING
            and i >= after
            for i, m in enumerate(messages)
        )

    await received.wait_for(ready, timeout=timeout)  # type: ignore[arg-type]
    return len(received.messages)


async def test_a_dc_killed_mid_deploy_finishes_every_deploy_once(
    kvm_host: KvmHost, central: tuple[CentralLink, Received], rabbitmq_url: str, tmp_path: Path
) -> None:
    link, received = central
    host = kvm_host
    await asyncio.to_thread(_big_template, host.repository / BIG)
    dc_uuid = str(uuid.uuid4())
    config = tmp_path / "dc.toml"
    config.write_text(
        f'[datacenter]\nuuid = "{dc_uuid}"\nname = "crash"\nstate_dir = "{tmp_path / "state"}"\n'
        "heartbeat_interval = 0.5\n"
        f'[http]\nhost = "127.0.0.1"\nport = {free_port()}\n'
        f'[rabbitmq]\nurl = "{rabbitmq_url}"\n'
        "[vfactory]\nmax_jobs_per_host = 4\nretry_initial = 0.1\nretry_max = 1.0\n"
        "driver_timeout = 20.0\n"
    )
    dc = DcProcess(config, tmp_path / "dc.log")
    await dc.start()
    try:
        seen = await running_since(received, dc_uuid, 0, timeout=60)
    except TimeoutError:
        await dc.kill()
        pytest.fail(f"the DC did not come up:\n{dc.tail()}")

    tasks = []
    for _ in range(DEPLOYS):
        d = host.definition()
        d = type(d)(
            uuid=d.uuid,
            name=d.name,
            cpu=d.cpu,
            ram_mb=d.ram_mb,
            nics=d.nics,
            disks=[
                RepositoryDisk(
                    repository_path=BIG,
                    datastore=str(host.datastore),
                    format=DiskFormat.RAW,
                    size_bytes=32 * 1024 * 1024,
                )
            ],
        )
        tasks.append(
            VirtualFactoryTask(
                task_id=f"task-{uuid.uuid4().hex[:12]}",
                jobs=[
                    Job(
                        id=f"job-{uuid.uuid4().hex}",
                        type=kind,
                        connection=host.connection,
                        definition=d,
                    )
                    for kind in (JobType.CONFIGURE, JobType.POWER_ON)
                ],
            )
        )
    for task in tasks:
        await link.send(dc_uuid, "virtualfactory", task)

    def notifications() -> list[JobNotification]:
        return [m for m in received.messages if isinstance(m, JobNotification)]

    # Killed as soon as the first VM is configured: the others are mid-copy or waiting.
    await received.wait_for(
        lambda ms: any(isinstance(m, JobNotification) and m.state is JobState.DONE for m in ms),
        timeout=60,
    )
    assert await dc.kill() == -signal.SIGKILL
    ended_before = {n.job_id for n in notifications() if n.state in FINAL}
    all_jobs = {job.id for task in tasks for job in task.jobs}
    assert ended_before < all_jobs, "every deploy ended before the kill: nothing was tested"

    await dc.start()
    try:
        await running_since(received, dc_uuid, seen, timeout=60)

        def every_job_ended(_: object) -> bool:
            return all_jobs <= {n.job_id for n in notifications() if n.state in FINAL}

        try:
            await received.wait_for(every_job_ended, timeout=120)
        except TimeoutError:
            pytest.fail(f"some jobs never ended:\n{dc.tail()}")
        await asyncio.sleep(1.0)  # anything sent twice would be here by now
    finally:
        await dc.kill(signal.SIGTERM)

    # The journal, not only the broker's redelivery, brought the deploys back.
    assert "resuming unfinished tasks" in dc.log.read_text()
    sent = notifications()
    # A notification sent again after the restart has the id it had: central counts it once.
    distinct = {n.message_id: n for n in sent}.values()
    for task in tasks:
        for job in task.jobs:
            finals = [n for n in distinct if n.job_id == job.id and n.state in FINAL]
            assert len(finals) == 1, (job.type, [n.state for n in finals])
            assert finals[0].state is JobState.DONE, finals[0].error_message
            starts = [n for n in distinct if n.job_id == job.id and n.state is JobState.START]
            assert len(starts) == 1

    def domains(conn: libvirt.virConnect) -> dict[str, int]:
        names: dict[str, int] = {}
        for dom in conn.listAllDomains(0):
            names[dom.name()] = names.get(dom.name(), 0) + 1
        return names

    found = await host.libvirt.call(domains, host.libvirt.conn)
    for task in tasks:
        assert found.get(task.jobs[0].definition.name) == 1
    # One disk per VM on the datastore, nothing half-copied left beside them.
    assert sorted(p.name for p in host.datastore.iterdir()) == sorted(
        t.jobs[0].definition.uuid for t in tasks
    )
