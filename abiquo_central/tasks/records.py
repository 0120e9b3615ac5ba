"""A task written and queued: its row, its jobs' rows, and its message in the outbox,
in the caller's transaction. Every way a task starts (an action, a reconfigure, a
REFRESH, a retry by hand) goes through here, so that the message a DC gets always
matches what central recorded."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy.ext.asyncio import AsyncConnection

from abiquo_central.db import tables
from abiquo_central.tasks.definitions import Placed
from abiquo_central.tasks.outbox import enqueue
from abiquo_central.tasks.plans import JobState, TaskState, TaskType
from abiquo_dc.protocol import jobs as dc
from abiquo_dc.protocol.definitions import VirtualMachineDefinition

# The datacenter's queue that takes VM tasks.
VIRTUAL_FACTORY = "virtualfactory"

_task, _job = tables.task, tables.job

# Where a task's payload keeps its SNAPSHOT's destination, for a retry to send it again.
_SNAPSHOT = "snapshot"


def snapshot_in(payload: dict[str, Any] | None) -> dc.Snapshot | None:
    """The SNAPSHOT destination `queue_task` kept in a task's payload, if any."""
    if not payload or _SNAPSHOT not in payload:
        return None
    return msgspec.convert(payload[_SNAPSHOT], dc.Snapshot)


async def send_task(
    conn: AsyncConnection,
    task_id: str,
    jobs: Sequence[tuple[str, dc.JobType]],
    where: Placed,
    *,
    now: datetime,
    previous: VirtualMachineDefinition | None = None,
    snapshot: dc.Snapshot | None = None,
) -> None:
    """Queue the task's message: its jobs (id, type), in order, for the VM `where` is;
    a SNAPSHOT job copies the disk where `snapshot` says."""
    message = dc.VirtualFactoryTask(
        task_id=task_id,
        jobs=[
            dc.Job(
                id=job_id,
                type=job_type,
                connection=where.connection,
                definition=where.definition,
                previous=previous,
                snapshot=snapshot if job_type is dc.JobType.SNAPSHOT else None,
            )
            for job_id, job_type in jobs
        ],
    )
    await enqueue(conn, where.dc_uuid, VIRTUAL_FACTORY, message, now=now)


async def queue_task(
    conn: AsyncConnection,
    vm: Any,
    kind: TaskType,
    job_types: Sequence[dc.JobType],
    where: Placed,
    *,
    user_id: int | None,
    now: datetime,
    payload: dict[str, Any] | None = None,
    description: str = "",
    previous: VirtualMachineDefinition | None = None,
    task_id: str | None = None,
    snapshot: dc.Snapshot | None = None,
) -> str:
    """Write a PENDING task of `kind` on `vm` (a virtual_machine row) with PENDING jobs
    of `job_types`, and queue its message; the task's id (`task_id` when the caller
    chose it, as a SNAPSHOT's destination names it)."""
    task_id = task_id or str(uuid.uuid4())
    if snapshot is not None:
        payload = {**(payload or {}), _SNAPSHOT: msgspec.to_builtins(snapshot)}
    jobs = [(f"{task_id}.{uuid.uuid4()}", job_type) for job_type in job_types]
    await conn.execute(
        _task.insert().values(
            id=task_id,
            virtual_machine_id=vm.id,
            user_id=user_id,
            enterprise_id=vm.enterprise_id,
            type=kind.value,
            state=TaskState.PENDING.value,
            payload=payload,
            created_at=now,
            updated_at=now,
        )
    )
    await conn.execute(
        _job.insert(),
        [
            {
                "id": job_id,
                "task_id": task_id,
                "sequence": i,
                "type": job_type.value,
                "state": JobState.PENDING.value,
                "rollback_state": JobState.UNKNOWN.value,
                "description": description or f"{job_type.value} of {vm.label}",
                "error": "",
                "updated_at": now,
            }
            for i, (job_id, job_type) in enumerate(jobs)
        ],
    )
    await send_task(conn, task_id, jobs, where, now=now, previous=previous, snapshot=snapshot)
    return task_id
