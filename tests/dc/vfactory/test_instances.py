"""SNAPSHOT jobs that make an instance: the disk copied back over the simulator, then a
template made of it by an Appliance Manager on the bus (a stand-in here), announced in
the job's DONE; without the AM, with its errors, and across a restart."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from abiquo_dc.hypervisors.simulator import SimulatedCloud
from abiquo_dc.protocol.definitions import DiskFormat, VirtualMachineDefinition
from abiquo_dc.protocol.envelope import Message
from abiquo_dc.protocol.jobs import (
    InstanceRegistered,
    JobNotification,
    JobState,
    JobType,
    RegisterInstance,
    Snapshot,
    VirtualFactoryTask,
)
from abiquo_dc.protocol.templates import TemplateDefinition
from abiquo_dc.vfactory.service import Stopping
from abiquo_runtime.errors import AbiquoError, InvalidInput, TemporaryError
from tests.dc.vfactory.harness import Harness, definition, job, running_factory, states, task

DISK = "7/instance-task-1/disk"


class AmStandIn:
    """Registers each disk once, as the AM does: asked again, answers the same.

    `failures` are raised, in order, before any answer; `hang` holds every request."""

    def __init__(self, *failures: AbiquoError) -> None:
        self.failures = list(failures)
        self.hang = False
        self.asked: list[RegisterInstance] = []
        self.registered: dict[str, TemplateDefinition] = {}

    async def __call__(self, request: RegisterInstance) -> Message:
        self.asked.append(request)
        if self.hang:
            await asyncio.Event().wait()
        if self.failures:
            raise self.failures.pop(0)
        template = self.registered.get(request.disk_path)
        if template is None:
            template = self.registered[request.disk_path] = TemplateDefinition(
                ovf_id=f"{request.disk_path.split('/')[1]}/disk.ovf",
                name=request.name,
                description=request.description,
                disk_format=DiskFormat.QCOW2_SPARSE,
                disk_path=request.disk_path,
                disk_file_size=1024,
                virtual_size=2048,
            )
        return InstanceRegistered(template=template)


def instance(d: VirtualMachineDefinition, path: str = DISK) -> VirtualFactoryTask:
    snapshot = Snapshot(
        repository_path=path,
        enterprise_id="7",
        template_name="golden",
        template_description="made from a VM",
    )
    return task(job(JobType.SNAPSHOT, d, snapshot=snapshot))


async def configured(h: Harness) -> VirtualMachineDefinition:
    d = definition()
    await h.run(task(job(JobType.CONFIGURE, d)))
    h.sent.clear()
    return d


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll: what the condition reads is changed by tasks that signal nothing."""
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def test_the_done_of_an_instance_names_the_template_it_became(tmp_path: Path) -> None:
    async with running_factory(tmp_path) as h:
        am = AmStandIn()
        h.bus.serve(RegisterInstance, am)
        d = await configured(h)
        sent = await h.run(instance(d))
        assert states(sent) == [("SNAPSHOT", "START"), ("SNAPSHOT", "DONE")]
        assert DISK in h.cloud.host("10.0.0.1").repository
        [asked] = am.asked
        assert (asked.enterprise_id, asked.disk_path, asked.name, asked.description) == (
            "7",
            DISK,
            "golden",
            "made from a VM",
        )
        assert sent[-1].template == am.registered[DISK]
        assert sent[0].template is None


async def test_a_snapshot_without_a_template_name_asks_no_am(tmp_path: Path) -> None:
    async with running_factory(tmp_path) as h:
        am = AmStandIn()
        h.bus.serve(RegisterInstance, am)
        d = await configured(h)
        sent = await h.run(task(job(JobType.SNAPSHOT, d, snapshot=Snapshot(repository_path=DISK))))
        assert states(sent)[-1] == ("SNAPSHOT", "DONE")
        assert sent[-1].template is None and am.asked == []
        # Without a template the path is not the task's own: what is there is not its.
        again = await h.run(task(job(JobType.SNAPSHOT, d, snapshot=Snapshot(repository_path=DISK))))
        assert again[-1].state is JobState.FAILED
        assert again[-1].error_code == "HV-DISK-EXISTS"


async def test_without_an_am_the_instance_fails_for_want_of_it(tmp_path: Path) -> None:
    async with running_factory(tmp_path) as h:
        d = await configured(h)
        sent = await h.run(instance(d))
        assert states(sent) == [("SNAPSHOT", "START"), ("SNAPSHOT", "FAILED")]
        assert sent[-1].error_code == "VF-AM-UNAVAILABLE"
        assert "appliance manager" in sent[-1].error_message
        assert sent[-1].template is None


async def test_an_am_that_fails_for_now_is_asked_again(tmp_path: Path) -> None:
    async with running_factory(tmp_path) as h:
        am = AmStandIn(TemporaryError("the repository is not mounted", code="AM-REPOSITORY"))
        h.bus.serve(RegisterInstance, am)
        d = await configured(h)
        sent = await h.run(instance(d))
        assert states(sent) == [("SNAPSHOT", "START"), ("SNAPSHOT", "DONE")]
        assert len(am.asked) == 2
        assert sent[-1].template == am.registered[DISK]


async def test_an_am_away_for_longer_than_the_retries_fails_the_job_with_its_code(
    tmp_path: Path,
) -> None:
    async with running_factory(tmp_path) as h:
        away = TemporaryError("the repository is not mounted", code="AM-REPOSITORY")
        am = AmStandIn(away, away, away)
        h.bus.serve(RegisterInstance, am)
        d = await configured(h)
        sent = await h.run(instance(d))
        assert sent[-1].state is JobState.FAILED
        assert sent[-1].error_code == "AM-REPOSITORY"
        assert len(am.asked) == 3  # the settings' attempts


async def test_an_am_refusal_fails_the_job_at_once_with_its_code(tmp_path: Path) -> None:
    async with running_factory(tmp_path) as h:
        am = AmStandIn(InvalidInput("not a directory of enterprise 7", code="GEN-1"))
        h.bus.serve(RegisterInstance, am)
        d = await configured(h)
        sent = await h.run(instance(d))
        assert (sent[-1].state, sent[-1].error_code) == (JobState.FAILED, "GEN-1")
        assert "enterprise 7" in sent[-1].error_message
        assert len(am.asked) == 1


async def test_an_am_answering_something_else_fails_the_job(tmp_path: Path) -> None:
    async with running_factory(tmp_path) as h:

        async def confused(request: RegisterInstance) -> Message:
            return RegisterInstance(enterprise_id="7", disk_path=DISK, name="echo")

        h.bus.serve(RegisterInstance, confused)
        d = await configured(h)
        sent = await h.run(instance(d))
        assert (sent[-1].state, sent[-1].error_code) == (JobState.FAILED, "HV-FAILED")
        assert "RegisterInstance" in sent[-1].error_message


async def test_an_instance_needs_its_enterprise(tmp_path: Path) -> None:
    async with running_factory(tmp_path) as h:
        d = await configured(h)
        orphan = Snapshot(repository_path=DISK, template_name="golden")
        with pytest.raises(InvalidInput, match="enterprise"):
            await h.run(task(job(JobType.SNAPSHOT, d, snapshot=orphan)))
        assert h.sent == []


async def test_a_copy_that_landed_before_a_crash_is_kept_and_registered_once(
    tmp_path: Path,
) -> None:
    cloud = SimulatedCloud()
    sent: list[JobNotification] = []
    async with running_factory(tmp_path, cloud=cloud, sent=sent) as h:
        d = await configured(h)
        host = cloud.host("10.0.0.1")
        host.hang("copy_disk_to_repository")
        t = instance(d)
        delivery = asyncio.ensure_future(h.run(t))
        await until(lambda: states(sent) == [("SNAPSHOT", "START")])
    with pytest.raises(Stopping):
        await delivery
    # The host finished the copy after the datacenter went away.
    host.heal()
    host.repository[DISK] = 1024

    am = AmStandIn()
    async with running_factory(
        tmp_path, cloud=cloud, sent=sent, prepare_bus=lambda bus: bus.serve(RegisterInstance, am)
    ) as h:
        await h.run(t)  # delivered again: attaches to the resumed run
    assert states(sent) == [("SNAPSHOT", "START"), ("SNAPSHOT", "DONE")]
    assert len(am.asked) == 1
    assert sent[-1].template == am.registered[DISK]
    await cloud.close()


async def test_a_registration_cut_short_by_a_stop_is_asked_again_and_done_once(
    tmp_path: Path,
) -> None:
    cloud = SimulatedCloud()
    sent: list[JobNotification] = []
    am = AmStandIn()
    am.hang = True
    async with running_factory(tmp_path, cloud=cloud, sent=sent) as h:
        h.bus.serve(RegisterInstance, am)
        d = await configured(h)
        t = instance(d)
        delivery = asyncio.ensure_future(h.run(t))
        await until(lambda: len(am.asked) == 1)
    with pytest.raises(Stopping):
        await delivery
    assert DISK in cloud.host("10.0.0.1").repository
    assert states(sent) == [("SNAPSHOT", "START")]

    am.hang = False
    async with running_factory(
        tmp_path, cloud=cloud, sent=sent, prepare_bus=lambda bus: bus.serve(RegisterInstance, am)
    ):
        await until(lambda: len(sent) == 2)
    assert states(sent) == [("SNAPSHOT", "START"), ("SNAPSHOT", "DONE")]
    assert len(am.asked) == 2 and len(am.registered) == 1
    assert sent[-1].template == am.registered[DISK]
    await cloud.close()
