"""The Virtualization Manager end to end over the simulator: order, rollback, retries,
duplicates, limits and the disk's preparation."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from abiquo_dc.hypervisors.base import DriverFailure, InvalidDefinition, PowerState
from abiquo_dc.hypervisors.simulator import disk_file
from abiquo_dc.protocol.definitions import DiskFormat, Nic
from abiquo_dc.protocol.jobs import (
    ConvertDisk,
    DhcpReservationRequested,
    DiskConverted,
    JobType,
    ObservedState,
    Snapshot,
)
from abiquo_dc.vfactory.journal import TaskRecord
from abiquo_runtime.errors import InvalidInput
from tests.dc.vfactory.harness import (
    DATASTORE,
    definition,
    deploy,
    fast_settings,
    job,
    running_factory,
    states,
    task,
)

DEPLOYED = [
    ("CONFIGURE", "START"),
    ("CONFIGURE", "DONE"),
    ("POWER_ON", "START"),
    ("POWER_ON", "DONE"),
]


async def test_a_deploy_creates_the_vm_and_says_each_step(tmp_path: Path) -> None:
    async with running_factory(tmp_path) as h:
        d = definition()
        sent = await h.run(deploy(d))
        assert states(sent) == DEPLOYED
        assert h.cloud.host("10.0.0.1").vm(d.uuid).power_state is PowerState.ON
        assert all(n.dc_uuid == "dc-test" and n.vm_uuid == d.uuid for n in sent)
        assert len({n.message_id for n in sent}) == 4


async def test_every_job_type_does_its_part(tmp_path: Path) -> None:
    async with running_factory(tmp_path) as h:
        d = definition()
        host = h.cloud.host("10.0.0.1")
        await h.run(deploy(d))
        await h.run(task(job(JobType.PAUSE, d)))
        assert host.vm(d.uuid).power_state is PowerState.PAUSED
        await h.run(task(job(JobType.RESUME, d)))
        assert host.vm(d.uuid).power_state is PowerState.ON
        await h.run(task(job(JobType.RESET, d)))
        await h.run(task(job(JobType.SHUTDOWN, d)))
        assert host.vm(d.uuid).power_state is PowerState.OFF
        bigger = definition(d.uuid, cpu=4)
        await h.run(task(job(JobType.RECONFIGURE, bigger, previous=d)))
        assert host.vm(d.uuid).definition.cpu == 4
        snap = Snapshot(repository_path="1/instances/copy.qcow2")
        await h.run(task(job(JobType.SNAPSHOT, bigger, snapshot=snap)))
        assert "1/instances/copy.qcow2" in host.repository
        refresh = await h.run(task(job(JobType.REFRESH, bigger)))
        assert refresh[-1].observed is ObservedState.OFF
        await h.run(task(job(JobType.DECONFIGURE, bigger)))
        assert d.uuid not in host.vms
        assert not host.file_exists(disk_file(d, 0, DATASTORE))
        gone = await h.run(task(job(JobType.REFRESH, bigger)))
        assert gone[-1].observed is ObservedState.ABSENT
        assert all(n.state.value in ("START", "DONE") for n in h.sent)


async def test_the_same_task_twice_at_once_runs_once(tmp_path: Path) -> None:
    async with running_factory(tmp_path) as h:
        h.cloud.host("10.0.0.1").delay("configure", 0.1)
        d = definition()
        t = deploy(d)
        assert h.factory.runner is not None
        runs: list[str] = []
        run = h.factory.runner.run

        async def counted(record: TaskRecord) -> None:
            runs.append(record.task.task_id)
            await run(record)

        h.factory.runner.run = counted  # type: ignore[method-assign]
        await asyncio.gather(h.run(t), h.run(t), h.run(t))
        assert runs == [t.task_id]
        assert states(h.sent) == DEPLOYED
        assert list(h.cloud.host("10.0.0.1").vms) == [d.uuid]


async def test_a_task_delivered_after_it_finished_is_not_run_again(tmp_path: Path) -> None:
    async with running_factory(tmp_path) as h:
        d = definition()
        t = deploy(d)
        await h.run(t)
        await h.run(task(job(JobType.POWER_OFF, d)))
        await h.run(t)  # would power the VM on again
        assert h.cloud.host("10.0.0.1").vm(d.uuid).power_state is PowerState.OFF
        assert len(h.sent) == 6
    # And across a restart: the journal remembers finished tasks.
    async with running_factory(tmp_path, cloud=h.cloud) as again:
        await again.run(t)
        assert again.sent == []


async def test_a_failed_power_on_rolls_back_the_configure(tmp_path: Path) -> None:
    async with running_factory(tmp_path) as h:
        host = h.cloud.host("10.0.0.1")
        host.fail("power_on", error=DriverFailure("no CPU left"))
        d = definition()
        sent = await h.run(deploy(d))
        assert states(sent) == [
            ("CONFIGURE", "START"),
            ("CONFIGURE", "DONE"),
            ("POWER_ON", "START"),
            ("POWER_ON", "FAILED"),
            ("CONFIGURE", "ROLLBACK_START"),
            ("CONFIGURE", "ROLLBACK_DONE"),
        ]
        assert sent[3].error_code == "HV-FAILED"
        assert "no CPU left" in sent[3].error_message
        assert d.uuid not in host.vms
        assert not host.file_exists(disk_file(d, 0, DATASTORE))
        assert host.datastores[DATASTORE].used_bytes == 0


async def test_a_host_away_for_a_moment_is_retried(tmp_path: Path) -> None:
    async with running_factory(tmp_path) as h:
        host = h.cloud.host("10.0.0.1")
        host.fail("power_on", times=2)  # HostUnreachable twice, then fine
        d = definition()
        assert states(await h.run(deploy(d))) == DEPLOYED
        assert host.vm(d.uuid).power_state is PowerState.ON
        # Each failure dropped the connection: the retries connected again.
        assert len(h.opened) == 3


async def test_a_host_away_too_long_fails_the_job_then_rolls_back(tmp_path: Path) -> None:
    async with running_factory(tmp_path, settings=fast_settings(attempts=3)) as h:
        host = h.cloud.host("10.0.0.1")
        host.fail("power_on", times=3)
        d = definition()
        sent = await h.run(deploy(d))
        assert [n.error_code for n in sent if n.state.value == "FAILED"] == ["HV-UNREACHABLE"]
        assert states(sent)[-1] == ("CONFIGURE", "ROLLBACK_DONE")
        assert d.uuid not in host.vms


async def test_a_permanent_error_is_not_retried(tmp_path: Path) -> None:
    async with running_factory(tmp_path) as h:
        host = h.cloud.host("10.0.0.1")
        host.fail("configure", times=2, error=InvalidDefinition("no such bus"))
        sent = await h.run(deploy(definition()))
        assert states(sent) == [
            ("CONFIGURE", "START"),
            ("CONFIGURE", "FAILED"),
            ("POWER_ON", "FAILED"),
        ]
        assert sent[1].error_code == "HV-INVALID"
        assert sent[2].error_code == "VF-NOT-RUN"
        # One call took the first scripted failure; no retry took the second.
        assert host.take_failure("configure") is not None


async def test_an_independent_task_runs_every_job(tmp_path: Path) -> None:
    async with running_factory(tmp_path) as h:
        d = definition()
        await h.run(deploy(d))
        h.cloud.host("10.0.0.1").fail("pause", error=DriverFailure("no"))
        sent = await h.run(task(job(JobType.PAUSE, d), job(JobType.POWER_OFF, d), dependent=False))
        assert states(sent) == [
            ("PAUSE", "START"),
            ("PAUSE", "FAILED"),
            ("POWER_OFF", "START"),
            ("POWER_OFF", "DONE"),
        ]


async def test_an_invalid_task_is_refused_before_anything_runs(tmp_path: Path) -> None:
    async with running_factory(tmp_path) as h:
        with pytest.raises(InvalidInput):
            await h.run(task())
        d = definition()
        twice = job(JobType.POWER_ON, d)
        with pytest.raises(InvalidInput):
            await h.run(task(twice, twice))
        with pytest.raises(InvalidInput, match="SNAPSHOT"):
            await h.run(task(job(JobType.SNAPSHOT, d)))
        assert h.sent == []


async def test_one_vm_runs_its_tasks_in_turn_and_vms_run_side_by_side(tmp_path: Path) -> None:
    settings = fast_settings(max_jobs_per_host=16, max_jobs=64)
    async with running_factory(tmp_path, settings=settings) as h:
        h.cloud.host("10.0.0.1").delay("configure", 0.2)
        d = definition()
        first, second = deploy(d), task(job(JobType.POWER_OFF, d))
        started = time.monotonic()
        await asyncio.gather(h.run(first), h.run(second))
        # The power off waited for the deploy: it ran last and left the VM off.
        assert states(h.sent)[-1] == ("POWER_OFF", "DONE")
        assert h.cloud.host("10.0.0.1").vm(d.uuid).power_state is PowerState.OFF
        others = [deploy(definition()) for _ in range(10)]
        started = time.monotonic()
        await asyncio.gather(*(h.run(t) for t in others))
        # Ten configures of 0.2 s side by side: far less than one after the other.
        assert time.monotonic() - started < 1.0


async def test_a_host_gets_no_more_jobs_at_once_than_its_bound(tmp_path: Path) -> None:
    settings = fast_settings(max_jobs_per_host=2, max_jobs=64)
    async with running_factory(tmp_path, settings=settings, hosts=["10.0.0.1", "10.0.0.2"]) as h:
        one, two = h.cloud.host("10.0.0.1"), h.cloud.host("10.0.0.2")
        one.delay("configure", 0.2)
        two.delay("configure", 0.2)
        busy = await asyncio.gather(
            *(h.run(task(job(JobType.CONFIGURE, definition()))) for _ in range(4)),
            *(
                h.run(task(job(JobType.CONFIGURE, definition(), address="10.0.0.2")))
                for _ in range(4)
            ),
        )
        assert len(busy) == 8
        # Four configures on a host, two at a time: two rounds of 0.2 s for each host,
        # and both hosts at once.
        starts = {n.job_id: n.at for n in h.sent if n.state.value == "START"}
        dones = {n.job_id: n.at for n in h.sent if n.state.value == "DONE"}
        span = (max(dones.values()) - min(starts.values())).total_seconds()
        assert 0.4 <= span < 0.75


async def test_a_format_the_host_cannot_boot_is_converted_first(tmp_path: Path) -> None:
    async with running_factory(tmp_path) as h:
        h.cloud.remove_host("10.0.0.1")
        h.cloud.add_host("10.0.0.1", disk_formats=[DiskFormat.RAW, DiskFormat.QCOW2_SPARSE])
        asked: list[ConvertDisk] = []

        async def bpm(request: ConvertDisk) -> DiskConverted:
            asked.append(request)
            return DiskConverted(
                repository_path=request.repository_path + ".qcow2", format=DiskFormat.QCOW2_SPARSE
            )

        h.bus.serve(ConvertDisk, bpm)
        d = definition(fmt=DiskFormat.VMDK_STREAM_OPTIMIZED)
        assert [s for _, s in states(await h.run(deploy(d)))][-1] == "DONE"
        assert [a.source_format for a in asked] == [DiskFormat.VMDK_STREAM_OPTIMIZED]
        made = h.cloud.host("10.0.0.1").vm(d.uuid).definition
        assert made.disks[0].format is DiskFormat.QCOW2_SPARSE  # type: ignore[union-attr]


async def test_without_a_bpm_a_conversion_fails_for_now_then_the_job(tmp_path: Path) -> None:
    async with running_factory(tmp_path) as h:
        h.cloud.remove_host("10.0.0.1")
        h.cloud.add_host("10.0.0.1", disk_formats=[DiskFormat.RAW])
        sent = await h.run(deploy(definition(fmt=DiskFormat.VMDK_SPARSE)))
        assert sent[1].error_code == "VF-BPM-UNAVAILABLE"
        assert h.cloud.host("10.0.0.1").vms == {}


async def test_a_dhcp_reservation_is_asked_for_each_addressed_nic(tmp_path: Path) -> None:
    async with running_factory(tmp_path) as h:
        asked: list[DhcpReservationRequested] = []

        async def dhcp(message: DhcpReservationRequested) -> None:
            asked.append(message)

        h.bus.subscribe(DhcpReservationRequested, dhcp)
        nics = [
            Nic(mac="52:54:00:aa:00:01", ip="10.1.0.5", vlan_tag=12, network_name="private"),
            Nic(mac="52:54:00:aa:00:02"),
        ]
        d = definition(nics=nics)
        await h.run(deploy(d))
        await h.bus.drain(1.0)
        assert [(a.mac, a.ip, a.vlan_tag) for a in asked] == [("52:54:00:aa:00:01", "10.1.0.5", 12)]
        assert asked[0].hostname == d.name
