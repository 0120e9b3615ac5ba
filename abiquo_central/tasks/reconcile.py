"""Nothing stays stuck: tasks without news are asked about, and settled by what is seen.

A task that has heard nothing from its datacenter for `stale_after` seconds (the DC was
down, a notification was lost to a restored broker...) gets a REFRESH: a task of its own
whose one job looks at the VM on its hypervisor and reports what it sees. What it sees
settles the stuck task: the state the task wanted (ON after a deploy, absent after an
undeploy, ...) finishes it successfully; anything else finishes it unsuccessfully, with
the VM set to what was seen (absent: NOT_ALLOCATED and its resources freed). A REFRESH
that fails changes nothing: the stuck task is asked about again later. The DC runs a
VM's tasks one after the other, so a REFRESH sent while the task still runs there is
answered after it, by which time the task's own notifications have finished it.

An administrator settles a task by hand with `settle_by_hand` (done or failed), or has
it sent again with `retry_by_hand`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from abiquo_central.allocation import release
from abiquo_central.db import tables
from abiquo_central.tasks.definitions import placed
from abiquo_central.tasks.observations import subscribe, unsubscribe
from abiquo_central.tasks.plans import FINISHED, JobState, TaskState, TaskType, VmState
from abiquo_central.tasks.records import queue_task, send_task, snapshot_in
from abiquo_dc.protocol import jobs as dc
from abiquo_runtime.errors import AbiquoError, Conflict
from abiquo_runtime.secrets import SecretBox

_task, _job, _vm = tables.task, tables.job, tables.virtual_machine

# What each kind of task leaves the VM as, as a REFRESH would see it.
EXPECTED: dict[TaskType, dc.ObservedState] = {
    TaskType.DEPLOY: dc.ObservedState.ON,
    TaskType.UNDEPLOY: dc.ObservedState.ABSENT,
    TaskType.POWER_ON: dc.ObservedState.ON,
    TaskType.POWER_OFF: dc.ObservedState.OFF,
    TaskType.PAUSE: dc.ObservedState.PAUSED,
    TaskType.RESUME: dc.ObservedState.ON,
    TaskType.RESET: dc.ObservedState.ON,
    TaskType.RECONFIGURE: dc.ObservedState.OFF,
    # Not SNAPSHOT: it leaves the VM OFF as it found it, so what is seen cannot tell
    # whether the copy was made. A stuck one is settled unsuccessfully (an administrator
    # may retry it to the same place); a template its datacenter did make still arrives
    # in the Appliance Manager's own report.
}
_SEEN = {
    dc.ObservedState.ON: VmState.ON,
    dc.ObservedState.OFF: VmState.OFF,
    dc.ObservedState.PAUSED: VmState.PAUSED,
    dc.ObservedState.UNKNOWN: VmState.UNKNOWN,
}

_log = structlog.get_logger("abiquo.central.reconcile")


async def _ask(conn: AsyncConnection, stuck: Any, secrets: SecretBox, now: datetime) -> None:
    vm = (await conn.execute(select(_vm).where(_vm.c.id == stuck.virtual_machine_id))).one()
    where = await placed(conn, vm, secrets)
    await queue_task(
        conn,
        vm,
        TaskType.REFRESH,
        [dc.JobType.REFRESH],
        where,
        user_id=None,
        now=now,
        payload={"for": stuck.id},
        description=f"what became of task {stuck.id}",
    )
    # Asked now: not again before another stale_after without news.
    await conn.execute(_task.update().where(_task.c.id == stuck.id).values(updated_at=now))


async def _still_asking(conn: AsyncConnection, stuck: Any, since: datetime) -> bool:
    """Whether a REFRESH of the stuck task's VM sent after `since` is unanswered."""
    found = (
        await conn.execute(
            select(_task.c.id)
            .where(
                _task.c.virtual_machine_id == stuck.virtual_machine_id,
                _task.c.type == TaskType.REFRESH.value,
                _task.c.state.in_([TaskState.PENDING.value, TaskState.STARTED.value]),
                _task.c.created_at >= since,
            )
            .limit(1)
        )
    ).first()
    return found is not None


async def ask_about_stale(
    engine: AsyncEngine, *, secrets: SecretBox, now: datetime, stale_after: float, most: int = 100
) -> int:
    """Send a REFRESH for each unfinished task without news for `stale_after` seconds;
    how many were sent."""
    before = now - timedelta(seconds=stale_after)
    async with engine.connect() as conn:
        stale = (
            (
                await conn.execute(
                    select(_task.c.id)
                    .where(
                        _task.c.state.in_([TaskState.PENDING.value, TaskState.STARTED.value]),
                        _task.c.type != TaskType.REFRESH.value,
                        _task.c.updated_at < before,
                    )
                    .order_by(_task.c.updated_at)
                    .limit(most)
                )
            )
            .scalars()
            .all()
        )
    asked = 0
    for task_id in stale:
        try:
            async with engine.begin() as conn:
                stuck = (
                    await conn.execute(select(_task).where(_task.c.id == task_id).with_for_update())
                ).one()
                # Another process asked, or news came, since it was read.
                if TaskState(stuck.state) in FINISHED or stuck.updated_at >= before:
                    continue
                if await _still_asking(conn, stuck, now - timedelta(seconds=4 * stale_after)):
                    # The last REFRESH is unanswered (the DC is away): another would only
                    # queue behind it. Asked again if it stays unanswered much longer.
                    await conn.execute(
                        _task.update().where(_task.c.id == stuck.id).values(updated_at=now)
                    )
                    continue
                await _ask(conn, stuck, secrets, now)
                asked += 1
        except AbiquoError as exc:
            _log.warning("a stale task could not be asked about", task=task_id, error=exc)
    return asked


async def _close(
    conn: AsyncConnection, task_id: str, state: TaskState, why: str, now: datetime
) -> None:
    final = JobState.DONE if state is TaskState.FINISHED_SUCCESSFULLY else JobState.FAILED
    await conn.execute(
        _job.update()
        .where(
            _job.c.task_id == task_id,
            _job.c.state.in_([JobState.PENDING.value, JobState.STARTED.value]),
        )
        .values(state=final.value, error=why, updated_at=now)
    )
    await conn.execute(
        _task.update().where(_task.c.id == task_id).values(state=state.value, updated_at=now)
    )


async def settle(
    conn: AsyncConnection, task_id: str, seen: dc.ObservedState, *, now: datetime
) -> None:
    """Finish the stuck task by what its VM was seen to be (see the module)."""
    stuck = (
        await conn.execute(select(_task).where(_task.c.id == task_id).with_for_update())
    ).one_or_none()
    if stuck is None or TaskState(stuck.state) in FINISHED:
        return
    kind = TaskType(stuck.type)
    vm = (await conn.execute(select(_vm).where(_vm.c.id == stuck.virtual_machine_id))).one()
    if EXPECTED.get(kind) is seen:
        # Import here: lifecycle finishing a task is what a success means.
        from abiquo_central.tasks.lifecycle import finish

        await _close(conn, task_id, TaskState.FINISHED_SUCCESSFULLY, "", now)
        await finish(conn, stuck, TaskState.FINISHED_SUCCESSFULLY, now=now)
        return
    await _close(
        conn, task_id, TaskState.FINISHED_UNSUCCESSFULLY, f"reconciled: the VM is {seen}", now
    )
    if seen is dc.ObservedState.ABSENT:
        await unsubscribe(conn, vm, now=now)
        await release(conn, vm.id)
        return
    state = _SEEN[seen]
    await conn.execute(
        _vm.update()
        .where(_vm.c.id == vm.id)
        .values(state=state.value, locked_state=None, updated_at=now)
    )
    if kind is TaskType.DEPLOY:
        # It is on its host after all: watched from now on.
        await subscribe(conn, vm, seen, now=now)


async def settle_by_hand(
    engine: AsyncEngine,
    vm_id: int,
    *,
    succeeded: bool,
    now: datetime,
) -> str:
    """An administrator's verdict on the VM's unfinished task (its id): done as if every
    job had been, or failed as if the first unfinished one had."""
    from abiquo_central.tasks.lifecycle import finish

    async with engine.begin() as conn:
        stuck = await _unfinished(conn, vm_id)
        state = TaskState.FINISHED_SUCCESSFULLY if succeeded else TaskState.FINISHED_UNSUCCESSFULLY
        await _close(
            conn, stuck.id, state, "" if succeeded else "marked failed by an administrator", now
        )
        await finish(conn, stuck, state, now=now)
        return str(stuck.id)


async def retry_by_hand(
    engine: AsyncEngine, vm_id: int, *, secrets: SecretBox, now: datetime
) -> str:
    """Send the VM's unfinished task to its datacenter again, as it was (same task and
    job ids: a datacenter that has it attaches to its run or knows it finished, one that
    lost it runs it). A RECONFIGURE cannot be: the definition it undoes to is gone."""
    async with engine.begin() as conn:
        stuck = await _unfinished(conn, vm_id)
        if TaskType(stuck.type) is TaskType.RECONFIGURE:
            raise Conflict(
                "a reconfiguration cannot be sent again: mark it done or failed", code="TASK-2"
            )
        vm = (await conn.execute(select(_vm).where(_vm.c.id == vm_id))).one()
        where = await placed(conn, vm, secrets)
        jobs = (
            await conn.execute(
                select(_job.c.id, _job.c.type)
                .where(_job.c.task_id == stuck.id)
                .order_by(_job.c.sequence)
            )
        ).all()
        await send_task(
            conn,
            stuck.id,
            [(j.id, dc.JobType(j.type)) for j in jobs],
            where,
            now=now,
            snapshot=snapshot_in(stuck.payload),
        )
        await conn.execute(_task.update().where(_task.c.id == stuck.id).values(updated_at=now))
        return str(stuck.id)


async def _unfinished(conn: AsyncConnection, vm_id: int) -> Any:
    """The VM's unfinished task (not a REFRESH), locked; Conflict when it has none."""
    stuck = (
        await conn.execute(
            select(_task)
            .where(
                _task.c.virtual_machine_id == vm_id,
                _task.c.state.in_([TaskState.PENDING.value, TaskState.STARTED.value]),
                _task.c.type != TaskType.REFRESH.value,
            )
            .with_for_update()
        )
    ).first()
    if stuck is None:
        raise Conflict("the virtual machine has no unfinished task", code="TASK-1")
    return stuck


class TaskWatch:
    """Asks about stale tasks every `interval` seconds (see ask_about_stale)."""

    def __init__(
        self,
        engine: AsyncEngine,
        secrets: SecretBox,
        *,
        clock: Callable[[], datetime],
        stale_after: float,
        interval: float,
        on_queued: Callable[[], None],
    ) -> None:
        self._engine, self._secrets, self._clock = engine, secrets, clock
        self._stale_after, self._interval, self._on_queued = stale_after, interval, on_queued

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                asked = await ask_about_stale(
                    self._engine,
                    secrets=self._secrets,
                    now=self._clock(),
                    stale_after=self._stale_after,
                )
            except Exception:
                _log.exception("asking about stale tasks failed")
                continue
            if asked:
                _log.info("stale tasks asked about", tasks=asked)
                self._on_queued()
