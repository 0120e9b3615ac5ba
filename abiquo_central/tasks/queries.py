"""Reading tasks and their jobs (a VM's, newest first)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any

from sqlalchemy import ColumnElement, select
from sqlalchemy.ext.asyncio import AsyncEngine

from abiquo_central.db import tables
from abiquo_central.db.paging import Page, PageRequest, fetch_page
from abiquo_runtime.errors import NotFound

TASK_NOT_FOUND = "TASK-0"

_task, _job = tables.task, tables.job

SORTABLE: Mapping[str, ColumnElement[Any]] = MappingProxyType(
    {"timestamp": _task.c.created_at, "type": _task.c.type, "state": _task.c.state}
)


@dataclass(frozen=True, slots=True)
class JobView:
    id: str
    task_id: str
    type: str
    state: str
    rollback_state: str
    description: str
    error: str
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class TaskView:
    id: str
    vm_id: int
    user_id: int | None
    type: str
    state: str
    created_at: datetime
    updated_at: datetime
    jobs: tuple[JobView, ...]


async def _jobs(engine: AsyncEngine, task_ids: list[str]) -> dict[str, list[JobView]]:
    found: dict[str, list[JobView]] = {t: [] for t in task_ids}
    if not task_ids:
        return found
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(_job).where(_job.c.task_id.in_(task_ids)).order_by(_job.c.sequence)
        )
        for j in rows:
            found[j.task_id].append(
                JobView(
                    id=j.id,
                    task_id=j.task_id,
                    type=j.type,
                    state=j.state,
                    rollback_state=j.rollback_state,
                    description=j.description,
                    error=j.error,
                    updated_at=j.updated_at,
                )
            )
    return found


def _view(row: Any, jobs: list[JobView]) -> TaskView:
    return TaskView(
        id=row.id,
        vm_id=row.virtual_machine_id,
        user_id=row.user_id,
        type=row.type,
        state=row.state,
        created_at=row.created_at,
        updated_at=row.updated_at,
        jobs=tuple(jobs),
    )


async def list_tasks(engine: AsyncEngine, vm_id: int, *, page: PageRequest) -> Page[TaskView]:
    """The VM's tasks, newest first unless the page asks otherwise."""
    async with engine.connect() as conn:
        rows, total = await fetch_page(
            conn,
            select(_task).where(_task.c.virtual_machine_id == vm_id),
            page,
            sortable=SORTABLE,
            default_sort="timestamp",
            tiebreaker=_task.c.id,
            name=_task.c.type,
        )
    jobs = await _jobs(engine, [r.id for r in rows])
    return Page(items=[_view(r, jobs[r.id]) for r in rows], total=total)


async def get_task(engine: AsyncEngine, vm_id: int, task_id: str) -> TaskView:
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(_task).where(_task.c.id == task_id, _task.c.virtual_machine_id == vm_id)
            )
        ).one_or_none()
    if row is None:
        raise NotFound("The requested task does not exist", code=TASK_NOT_FOUND)
    return _view(row, (await _jobs(engine, [row.id]))[row.id])
