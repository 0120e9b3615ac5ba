"""A Virtualization Manager stopped in the middle of a task finishes or rolls it back at
its next start, from its journal, with one final notification per job."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from abiquo_dc.hypervisors.base import DriverFailure, PowerState
from abiquo_dc.hypervisors.simulator import SimulatedCloud, disk_file
from abiquo_dc.protocol.jobs import JobNotification, JobState, JobType
from abiquo_dc.vfactory.journal import JobJournal, Phase
from abiquo_dc.vfactory.service import JOURNAL_FILE, Stopping
from tests.dc.vfactory.harness import (
    DATASTORE,
    definition,
    deploy,
    running_factory,
    states,
)


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll: what the condition reads is changed by tasks that signal nothing."""
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


def finals(sent: list[JobNotification]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for n in sent:
        if n.state in (JobState.DONE, JobState.FAILED, JobState.ROLLBACK_DONE):
            out.setdefault(n.job_id, []).append(n.state.value)
    return out


async def test_a_configure_cut_short_is_done_at_the_next_start(tmp_path: Path) -> None:
    cloud = SimulatedCloud()
    sent: list[JobNotification] = []
    d = definition()
    t = deploy(d)
    async with running_factory(tmp_path, cloud=cloud, sent=sent) as h:
        cloud.host("10.0.0.1").hang("configure")
        delivery = asyncio.ensure_future(h.run(t))
        await until(lambda: len(sent) == 1)
    with pytest.raises(Stopping):
        await delivery
    assert states(sent) == [("CONFIGURE", "START")]
    cloud.host("10.0.0.1").heal()

    async with running_factory(tmp_path, cloud=cloud, sent=sent) as h:
        # The task is delivered again (it was never acknowledged): it attaches to the
        # resumed run, which does not say START twice.
        await h.run(t)
        assert states(sent) == [
            ("CONFIGURE", "START"),
            ("CONFIGURE", "DONE"),
            ("POWER_ON", "START"),
            ("POWER_ON", "DONE"),
        ]
        assert cloud.host("10.0.0.1").vm(d.uuid).power_state is PowerState.ON
    await cloud.close()


async def test_a_job_whose_effect_is_there_is_not_done_again(tmp_path: Path) -> None:
    cloud = SimulatedCloud()
    sent: list[JobNotification] = []
    d = definition()
    t = deploy(d)
    async with running_factory(tmp_path, cloud=cloud, sent=sent) as h:
        host = cloud.host("10.0.0.1")
        # The VM was made, and the process died before it could journal DONE.
        host.hang("power_on")
        delivery = asyncio.ensure_future(h.run(t))
        await until(lambda: len(sent) == 3)
    with pytest.raises(Stopping):
        await delivery
    host.heal()
    # As if POWER_ON had acted just before the crash.
    host.set_power(d.uuid, PowerState.ON)
    host.fail("power_on", error=DriverFailure("must not be called again"))
    async with running_factory(tmp_path, cloud=cloud, sent=sent):
        await until(lambda: len(sent) == 4)
        await asyncio.sleep(0.05)
    assert states(sent)[-1] == ("POWER_ON", "DONE")
    assert host.take_failure("power_on") is not None  # the scripted failure is unused
    await cloud.close()


async def test_a_rollback_cut_short_is_finished_at_the_next_start(tmp_path: Path) -> None:
    cloud = SimulatedCloud()
    sent: list[JobNotification] = []
    d = definition()
    async with running_factory(tmp_path, cloud=cloud, sent=sent) as h:
        host = cloud.host("10.0.0.1")
        host.fail("power_on", error=DriverFailure("broken"))
        host.hang("deconfigure")
        delivery = asyncio.ensure_future(h.run(deploy(d)))
        await until(lambda: states(sent)[-1:] == [("CONFIGURE", "ROLLBACK_START")])
    with pytest.raises(Stopping):
        await delivery
    host.heal()
    async with running_factory(tmp_path, cloud=cloud, sent=sent):
        await until(lambda: states(sent)[-1] == ("CONFIGURE", "ROLLBACK_DONE"))
    assert d.uuid not in host.vms
    assert not host.file_exists(disk_file(d, 0, DATASTORE))
    assert all(len(v) == 1 or v == ["DONE", "ROLLBACK_DONE"] for v in finals(sent).values())
    await cloud.close()


async def test_notifications_not_confirmed_are_sent_again_with_their_ids(
    tmp_path: Path,
) -> None:
    cloud = SimulatedCloud()
    sent: list[JobNotification] = []
    journaled: list[str] = []
    broker_away = asyncio.Event()

    async def publish(n: JobNotification) -> None:
        if n.state is JobState.DONE and n.job_type is JobType.CONFIGURE:
            journaled.append(n.message_id)
            broker_away.set()
            await asyncio.Event().wait()  # the broker never confirms

    d = definition()
    async with running_factory(tmp_path, cloud=cloud, sent=sent, publish=publish) as h:
        delivery = asyncio.ensure_future(h.run(deploy(d)))
        await broker_away.wait()
    with pytest.raises(Stopping):
        await delivery
    async with running_factory(tmp_path, cloud=cloud, sent=sent):
        await until(lambda: len(sent) == 4)
    assert states(sent) == [
        ("CONFIGURE", "START"),
        ("CONFIGURE", "DONE"),
        ("POWER_ON", "START"),
        ("POWER_ON", "DONE"),
    ]
    assert sent[1].message_id == journaled[0]
    await cloud.close()


async def test_the_journal_forgets_finished_tasks_after_their_retention(tmp_path: Path) -> None:
    journal = JobJournal(tmp_path / JOURNAL_FILE, retention=0.0)
    await journal.open()
    d = definition()
    t = deploy(d)
    record = await journal.begin(t)
    await journal.set_phase(record, Phase.FINISHED)
    assert journal.known(t.task_id)
    await journal.close()
    again = JobJournal(tmp_path / JOURNAL_FILE, retention=0.0)
    await again.open()
    assert not again.known(t.task_id)
    await again.close()
