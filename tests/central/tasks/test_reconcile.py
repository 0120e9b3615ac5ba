"""Tasks without news are asked about and settled by what is seen; or by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from abiquo_central.db import tables
from abiquo_central.tasks.lifecycle import apply_notification
from abiquo_central.tasks.plans import TaskType
from abiquo_central.tasks.reconcile import ask_about_stale, retry_by_hand, settle_by_hand
from abiquo_dc.protocol import jobs as dc
from abiquo_runtime.errors import Conflict
from abiquo_runtime.secrets import SecretBox
from tests.central.allocation.test_allocator import Cloud, cloud, machine, usage, vm
from tests.central.conftest import FakeClock
from tests.central.tasks.test_lifecycle import D, S, _report, _sent_task, _start, _task, _vm_row

__all__ = ["cloud"]

STALE = 300.0


async def _stale_deploy(
    engine: AsyncEngine, cloud: Cloud, clock: FakeClock, secrets: SecretBox
) -> tuple[int, int, str]:
    """A deploy whose CONFIGURE started, then nothing: its VM, machine and task."""
    host = await machine(engine, cloud, "10.0.0.1")
    one = await vm(engine, cloud, cpu=2, ram=1024)
    task_id = await _start(engine, one, TaskType.DEPLOY, secrets, clock)
    dc_uuid, sent = await _sent_task(engine, clock)
    await _report(engine, dc_uuid, sent, [(0, S)])
    # Its last news: an hour ago.
    async with engine.begin() as conn:
        await conn.execute(
            tables.task.update()
            .where(tables.task.c.id == task_id)
            .values(updated_at=datetime.now(UTC) - timedelta(hours=1))
        )
    return one, host, task_id


async def _refresh_answers(
    engine: AsyncEngine, clock: FakeClock, secrets: SecretBox, seen: dc.ObservedState | None
) -> None:
    asked = await ask_about_stale(engine, secrets=secrets, now=datetime.now(UTC), stale_after=STALE)
    assert asked == 1
    # Asked once: not again until another STALE without news.
    assert (
        await ask_about_stale(engine, secrets=secrets, now=datetime.now(UTC), stale_after=STALE)
        == 0
    )
    dc_uuid, refresh = await _sent_task(engine, clock)
    [job] = refresh.jobs
    assert job.type is dc.JobType.REFRESH
    state = dc.JobState.DONE if seen is not None else dc.JobState.FAILED
    await apply_notification(
        engine,
        dc.JobNotification(
            dc_uuid=dc_uuid,
            task_id=refresh.task_id,
            job_id=job.id,
            job_type=job.type,
            vm_uuid=job.definition.uuid,
            state=state,
            observed=seen,
            error_code="" if seen else "HV-UNREACHABLE",
            at=datetime.now(UTC),
        ),
        now=datetime.now(UTC),
    )


async def test_a_stale_deploy_found_on_is_done(
    engine: AsyncEngine, cloud: Cloud, clock: FakeClock, secrets: SecretBox
) -> None:
    one, host, task_id = await _stale_deploy(engine, cloud, clock, secrets)
    await _refresh_answers(engine, clock, secrets, dc.ObservedState.ON)
    assert (await _task(engine, task_id))[0] == "FINISHED_SUCCESSFULLY"
    assert await _vm_row(engine, one) == ("ON", None, host)


async def test_a_stale_deploy_found_absent_is_failed_and_freed(
    engine: AsyncEngine, cloud: Cloud, clock: FakeClock, secrets: SecretBox
) -> None:
    one, host, task_id = await _stale_deploy(engine, cloud, clock, secrets)
    await _refresh_answers(engine, clock, secrets, dc.ObservedState.ABSENT)
    state, jobs = await _task(engine, task_id)
    assert state == "FINISHED_UNSUCCESSFULLY" and {j[1] for j in jobs} == {"FAILED"}
    assert await _vm_row(engine, one) == ("NOT_ALLOCATED", None, None)
    assert (await usage(engine))[host][:2] == (0, 0)


async def test_a_failed_refresh_leaves_the_task_to_be_asked_again(
    engine: AsyncEngine, cloud: Cloud, clock: FakeClock, secrets: SecretBox
) -> None:
    one, _host, task_id = await _stale_deploy(engine, cloud, clock, secrets)
    await _refresh_answers(engine, clock, secrets, None)
    assert (await _task(engine, task_id))[0] == "STARTED"
    assert (await _vm_row(engine, one))[0] == "LOCKED"


async def test_an_administrator_settles_by_hand(
    engine: AsyncEngine, cloud: Cloud, clock: FakeClock, secrets: SecretBox
) -> None:
    one, _host, task_id = await _stale_deploy(engine, cloud, clock, secrets)
    assert await settle_by_hand(engine, one, succeeded=False, now=datetime.now(UTC)) == task_id
    assert await _vm_row(engine, one) == ("NOT_ALLOCATED", None, None)
    with pytest.raises(Conflict):
        await settle_by_hand(engine, one, succeeded=True, now=datetime.now(UTC))
    # And a late DONE of every job from the datacenter changes nothing any more.
    job = tables.job
    async with engine.connect() as conn:
        jobs = (
            await conn.execute(select(job.c.id, job.c.type).where(job.c.task_id == task_id))
        ).all()
    assert len(jobs) == 2
    for job_id, job_type in jobs:
        await apply_notification(
            engine,
            dc.JobNotification(
                dc_uuid="dc",
                task_id=task_id,
                job_id=job_id,
                job_type=dc.JobType(job_type),
                vm_uuid="vm",
                state=dc.JobState.DONE,
                at=datetime.now(UTC),
            ),
            now=datetime.now(UTC),
        )
    state, rows = await _task(engine, task_id)
    assert state == "FINISHED_UNSUCCESSFULLY" and {r[1] for r in rows} == {"FAILED"}
    assert await _vm_row(engine, one) == ("NOT_ALLOCATED", None, None)


async def test_an_unanswered_refresh_is_not_piled_up(
    engine: AsyncEngine, cloud: Cloud, clock: FakeClock, secrets: SecretBox
) -> None:
    await _stale_deploy(engine, cloud, clock, secrets)
    now = datetime.now(UTC)
    assert await ask_about_stale(engine, secrets=secrets, now=now, stale_after=STALE) == 1
    # The DC is away: the REFRESH goes unanswered, the task stays stale...
    later = now + timedelta(seconds=2 * STALE)
    assert await ask_about_stale(engine, secrets=secrets, now=later, stale_after=STALE) == 0
    # ...and only long after is it asked about again.
    much_later = now + timedelta(seconds=6 * STALE)
    assert await ask_about_stale(engine, secrets=secrets, now=much_later, stale_after=STALE) == 1


async def test_an_administrator_sends_it_again(
    engine: AsyncEngine, cloud: Cloud, clock: FakeClock, secrets: SecretBox
) -> None:
    one, _, task_id = await _stale_deploy(engine, cloud, clock, secrets)
    assert await retry_by_hand(engine, one, secrets=secrets, now=datetime.now(UTC)) == task_id
    dc_uuid, again = await _sent_task(engine, clock)
    # The same task, the same jobs: the datacenter recognises them.
    assert again.task_id == task_id
    assert [j.type for j in again.jobs] == [dc.JobType.CONFIGURE, dc.JobType.POWER_ON]
    await _report(engine, dc_uuid, again, [(0, D), (1, S), (1, D)])
    assert (await _task(engine, task_id))[0] == "FINISHED_SUCCESSFULLY"
    assert (await _vm_row(engine, one))[0] == "ON"
