"""Starting a task on a VM, and following it by the datacenter's job notifications.

`start_task` does in one transaction what a task is: the VM checked and LOCKED (its
state before kept in locked_state), the task and its jobs written, the message for the
datacenter queued in the outbox, the event recorded. A deploy allocates the VM first
(the allocator's own transaction) and gives the allocation back if the task cannot
start.

`apply_notification` moves a job forward (never back: a repeated or late notification
changes nothing), the task with it, and, once the task is over, the VM: to the plan's
state when every job was done, back to where it was when one failed (a failed deploy
frees its allocation, a done undeploy too).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from abiquo_central.allocation import allocate, claim_more, deallocate, release
from abiquo_central.allocation.allocator import NOT_ALLOCATABLE
from abiquo_central.allocation.limits import check_deploy_limits
from abiquo_central.db import tables
from abiquo_central.events import (
    Action,
    Actor,
    Component,
    Ref,
    Severity,
    record_action,
    record_event,
)
from abiquo_central.tasks.definitions import placed
from abiquo_central.tasks.instances import destination, instance_name, record_instance
from abiquo_central.tasks.observations import subscribe, unsubscribe
from abiquo_central.tasks.plans import (
    FINISHED,
    PLANS,
    JobState,
    TaskState,
    TaskType,
    VmState,
    jobs_for,
    moves_forward,
)
from abiquo_central.tasks.records import queue_task
from abiquo_dc.protocol import jobs as dc
from abiquo_dc.protocol.jobs import ObservedState
from abiquo_runtime.errors import Conflict, NotFound
from abiquo_runtime.secrets import SecretBox

VM_NOT_FOUND = "VM-0"
WRONG_STATE = "VM-4"

_vm, _task, _job = tables.virtual_machine, tables.task, tables.job

ACTIONS = {
    TaskType.DEPLOY: Action.VM_DEPLOY,
    TaskType.UNDEPLOY: Action.VM_UNDEPLOY,
    TaskType.POWER_ON: Action.VM_POWERON,
    TaskType.POWER_OFF: Action.VM_POWEROFF,
    TaskType.PAUSE: Action.VM_PAUSED,
    TaskType.RESUME: Action.VM_RESUMED,
    TaskType.RECONFIGURE: Action.VM_RECONFIGURE,
    TaskType.SNAPSHOT: Action.VM_INSTANCE,
}


@dataclass(frozen=True, slots=True)
class Started:
    task_id: str
    vm_id: int


async def _locked_vm(conn: AsyncConnection, vm_id: int) -> Any:
    row = (await conn.execute(select(_vm).where(_vm.c.id == vm_id).with_for_update())).one_or_none()
    if row is None:
        raise NotFound(f"there is no virtual machine {vm_id}", code=VM_NOT_FOUND)
    return row


async def start_task(
    engine: AsyncEngine,
    vm_id: int,
    kind: TaskType,
    *,
    actor: Actor,
    secrets: SecretBox,
    now: datetime,
    liveness_timeout: float,
    force_soft_limits: bool = False,
    instance: str = "",
) -> Started:
    """Start `kind` on the VM; Conflict (409) when its state does not allow it, and, for
    a deploy, LimitExceeded (409) past a limit (allocation/limits.py). A SNAPSHOT makes
    a template called `instance` of the VM's disk (tasks/instances.py)."""
    plan = PLANS[kind]
    if kind is TaskType.SNAPSHOT:
        instance = instance_name(instance)
    allocated = False
    if kind is TaskType.DEPLOY:
        try:
            await allocate(engine, vm_id, now=now, liveness_timeout=liveness_timeout)
        except Conflict as exc:
            # The allocator allocates only a NOT_ALLOCATED VM: any other cannot deploy.
            if exc.code != NOT_ALLOCATABLE:
                raise
            raise Conflict(exc.message, code=WRONG_STATE) from None
        allocated = True
    try:
        async with engine.begin() as conn:
            vm = await _locked_vm(conn, vm_id)
            current = VmState(vm.state)
            allowed = plan.from_states | ({VmState.ALLOCATED} if allocated else set())
            if current not in allowed:
                raise Conflict(
                    f"the virtual machine is {current}: {kind.value} needs it "
                    + " or ".join(sorted(s.value for s in plan.from_states)),
                    code=WRONG_STATE,
                )
            where = await placed(conn, vm, secrets)
            crossed = (
                await check_deploy_limits(conn, vm_id, force_soft=force_soft_limits)
                if allocated
                else []
            )
            task_id = str(uuid.uuid4())
            await queue_task(
                conn,
                vm,
                kind,
                jobs_for(kind, current),
                where,
                user_id=actor.user_id,
                now=now,
                task_id=task_id,
                snapshot=(
                    destination(vm, where, task_id, instance) if kind is TaskType.SNAPSHOT else None
                ),
            )
            await conn.execute(
                _vm.update()
                .where(_vm.c.id == vm_id)
                .values(state=VmState.LOCKED.value, locked_state=current.value, updated_at=now)
            )
            await record_action(
                conn,
                actor,
                component=Component.VIRTUAL_MACHINE,
                action=ACTIONS.get(kind, Action.VM_STATE),
                target=f"/virtualmachines/{vm.uuid}",
                message=f"{kind.value} of virtual machine {vm.label} started (task {task_id})",
            )
            for soft in crossed:
                await record_action(
                    conn,
                    actor,
                    severity=Severity.WARNING,
                    component=Component.VIRTUAL_MACHINE,
                    action=Action.SOFT_LIMIT_EXCEEDED,
                    target=f"/virtualmachines/{vm.uuid}",
                    message=f"Deploying {vm.label} passes the {soft}",
                )
    except BaseException:
        if allocated:
            await deallocate(engine, vm_id)
        raise
    return Started(task_id=task_id, vm_id=vm_id)


# What a reconfigure of a deployed VM may change, by column.
RECONFIGURABLE = ("cpu", "ram", "label", "description", "password", "high_disponibility")


async def start_reconfigure(
    engine: AsyncEngine,
    vm_id: int,
    changes: dict[str, Any],
    *,
    actor: Actor,
    secrets: SecretBox,
    now: datetime,
) -> Started:
    """Change a deployed, powered-off VM: its new values are stored at once (the API
    shows them) and the CPU and RAM it gains are claimed on its machine; the task's
    payload keeps the old ones, put back if the datacenter fails the RECONFIGURE.
    Conflict when the VM is not OFF, NoRoom when its machine has no room for more."""
    unknown = set(changes) - set(RECONFIGURABLE)
    if unknown:
        raise ValueError(f"not reconfigurable: {sorted(unknown)}")
    async with engine.begin() as conn:
        vm = await _locked_vm(conn, vm_id)
        current = VmState(vm.state)
        if current not in PLANS[TaskType.RECONFIGURE].from_states:
            raise Conflict(
                f"the virtual machine is {current}: a deployed one is reconfigured when OFF",
                code=WRONG_STATE,
            )
        before = await placed(conn, vm, secrets)
        previous = {column: getattr(vm, column) for column in RECONFIGURABLE}
        more_cpu = changes.get("cpu", vm.cpu) - vm.cpu
        more_ram = changes.get("ram", vm.ram) - vm.ram
        await claim_more(conn, vm.machine_id, cpu=more_cpu, ram=more_ram)
        await conn.execute(
            _vm.update()
            .where(_vm.c.id == vm_id)
            .values(
                **changes,
                state=VmState.LOCKED.value,
                locked_state=current.value,
                updated_at=now,
            )
        )
        after = await placed(conn, await _locked_vm(conn, vm_id), secrets)
        task_id = await queue_task(
            conn,
            vm,
            TaskType.RECONFIGURE,
            [dc.JobType.RECONFIGURE],
            after,
            user_id=actor.user_id,
            now=now,
            payload={"previous": previous},
            previous=before.definition,
        )
        await record_action(
            conn,
            actor,
            component=Component.VIRTUAL_MACHINE,
            action=Action.VM_RECONFIGURE,
            target=f"/virtualmachines/{vm.uuid}",
            message=f"Reconfiguration of virtual machine {vm.label} started (task {task_id})",
        )
    return Started(task_id=task_id, vm_id=vm_id)


def _api_state(n: dc.JobNotification) -> tuple[str, JobState] | None:
    """The (column, state) a notification moves a job to."""
    match n.state:
        case dc.JobState.START:
            return "state", JobState.STARTED
        case dc.JobState.DONE:
            return "state", JobState.DONE
        case dc.JobState.FAILED:
            # A job the DC never ran because one before it failed.
            skipped = n.error_code == "VF-NOT-RUN"
            return "state", JobState.SKIPPED if skipped else JobState.FAILED
        case dc.JobState.ROLLBACK_START:
            return "rollback_state", JobState.ROLLBACK_STARTED
        case dc.JobState.ROLLBACK_DONE | dc.JobState.ROLLBACK_FAILED:
            return "rollback_state", JobState.ROLLBACK_DONE
    return None


def _task_state(jobs: list[Mapping[Any, Any]]) -> TaskState:
    """What a task is, from its jobs (their columns) in order."""
    states = [JobState(j["state"]) for j in jobs]
    failed = any(s in (JobState.FAILED, JobState.SKIPPED) for s in states)
    if all(s is JobState.DONE for s in states):
        return TaskState.FINISHED_SUCCESSFULLY
    if failed:
        # Over once every job has its last word: the done ones rolled back.
        settled = all(
            s in (JobState.FAILED, JobState.SKIPPED)
            or (s is JobState.DONE and j["rollback_state"] == JobState.ROLLBACK_DONE)
            for s, j in zip(states, jobs, strict=True)
        )
        return TaskState.FINISHED_UNSUCCESSFULLY if settled else TaskState.STARTED
    if any(s is not JobState.PENDING for s in states):
        return TaskState.STARTED
    return TaskState.PENDING


async def apply_notification(engine: AsyncEngine, n: dc.JobNotification, *, now: datetime) -> None:
    """Move the job, its task and (once the task is over) its VM as the DC reports."""
    move = _api_state(n)
    if move is None:
        return
    column, new = move
    if n.template is not None and n.state is dc.JobState.DONE:
        # Before the job moves: a redelivery after a crash in between finds the job DONE
        # and stops there, so the template must be recorded by then.
        await record_instance(engine, n)
    async with engine.begin() as conn:
        task = (
            await conn.execute(select(_task).where(_task.c.id == n.task_id).with_for_update())
        ).one_or_none()
        if task is None or TaskState(task.state) in FINISHED:
            # Not central's (a task of a database restored since), or over already.
            return
        # All of the task's jobs at once: the one to move, and what the task becomes.
        jobs: dict[str, Mapping[Any, Any]] = {
            j["id"]: j
            for j in (
                await conn.execute(
                    select(_job).where(_job.c.task_id == n.task_id).order_by(_job.c.sequence)
                )
            ).mappings()
        }
        job = jobs.get(n.job_id)
        if job is None:
            return
        current = job[column]
        forward = (
            moves_forward(current, new)
            if column == "state"
            else current != JobState.ROLLBACK_DONE and current != new
        )
        if not forward:
            return
        values: dict[str, Any] = {column: new.value, "updated_at": now}
        if n.error_message:
            values["error"] = f"{n.error_code}: {n.error_message}"
        await conn.execute(_job.update().where(_job.c.id == n.job_id).values(**values))
        jobs[n.job_id] = {**job, **values}
        state = _task_state(list(jobs.values()))
        # The task's updated_at is its last news (what staleness is judged by): written
        # with every notification, its state with it.
        await conn.execute(
            _task.update().where(_task.c.id == n.task_id).values(state=state.value, updated_at=now)
        )
        if state in FINISHED:
            if TaskType(task.type) is TaskType.REFRESH:
                await _refreshed(conn, task, n, state, now=now)
            else:
                await finish(conn, task, state, now=now)


async def _refreshed(
    conn: AsyncConnection, task: Any, n: dc.JobNotification, state: TaskState, *, now: datetime
) -> None:
    """A REFRESH is over: what it saw settles the task it asked about."""
    from abiquo_central.tasks.reconcile import settle

    if state is TaskState.FINISHED_SUCCESSFULLY and n.observed is not None and task.payload:
        await settle(conn, task.payload["for"], n.observed, now=now)


async def finish(conn: AsyncConnection, task: Any, state: TaskState, *, now: datetime) -> None:
    """What the end of `task` does to its VM (and the event that says so)."""
    kind = TaskType(task.type)
    plan = PLANS.get(kind)
    vm = await _locked_vm(conn, task.virtual_machine_id)
    succeeded = state is TaskState.FINISHED_SUCCESSFULLY
    if plan is None:
        return
    if succeeded and kind is TaskType.DEPLOY:
        await subscribe(conn, vm, ObservedState.ON, now=now)
    if succeeded and plan.release_on_success:
        # Before the machine is forgotten: its datacenter is where the VM was watched.
        await unsubscribe(conn, vm, now=now)
    if kind is TaskType.RECONFIGURE and not succeeded and task.payload:
        # The datacenter kept the old definition: so does central, and the machine
        # gives back what the new one claimed.
        previous = task.payload["previous"]
        await claim_more(
            conn, vm.machine_id, cpu=previous["cpu"] - vm.cpu, ram=previous["ram"] - vm.ram
        )
        await conn.execute(_vm.update().where(_vm.c.id == vm.id).values(**previous))
    if (succeeded and plan.release_on_success) or (not succeeded and plan.release_on_failure):
        await release(conn, vm.id)
    else:
        back = plan.success if succeeded else VmState(vm.locked_state or VmState.UNKNOWN)
        await conn.execute(
            _vm.update()
            .where(_vm.c.id == vm.id)
            .values(state=back.value, locked_state=None, updated_at=now)
        )
    await record_event(
        conn,
        enterprise_of=vm.enterprise_id,
        user=Ref(task.user_id, "") if task.user_id is not None else None,
        severity=Severity.INFO if succeeded else Severity.MAJOR,
        component=Component.VIRTUAL_MACHINE,
        action=ACTIONS.get(kind, Action.VM_STATE),
        target=f"/virtualmachines/{vm.uuid}",
        message=f"{kind.value} of virtual machine {vm.label} {'done' if succeeded else 'failed'}",
        virtual_machine_id=vm.id,
        now=now,
    )
