"""Tasks on VMs: started in one transaction with their outbox message, moved by the
datacenter's job notifications, and the VM with them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from abiquo_central.allocation import NoRoom
from abiquo_central.db import tables
from abiquo_central.events import Actor
from abiquo_central.tasks.lifecycle import apply_notification, start_task
from abiquo_central.tasks.outbox import OutboxRelay
from abiquo_central.tasks.plans import TaskType
from abiquo_dc.protocol import codec
from abiquo_dc.protocol import jobs as dc
from abiquo_dc.protocol.messages import Inbound, Message
from abiquo_runtime.errors import Conflict, TemporaryError
from abiquo_runtime.secrets import SecretBox
from tests.central.allocation.test_allocator import LIVENESS, Cloud, cloud, machine, usage, vm
from tests.central.conftest import FakeClock

__all__ = ["cloud"]

ACTOR = Actor(user_id=1, nick="admin", enterprise_id=1)


class Sent:
    def __init__(self) -> None:
        self.messages: list[tuple[str, str, Message]] = []

    async def __call__(self, dc_uuid: str, service: str, message: Message) -> None:
        self.messages.append((dc_uuid, service, message))


async def _vm_row(engine: AsyncEngine, vm_id: int) -> tuple[str, str | None, int | None]:
    v = tables.virtual_machine
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(v.c.state, v.c.locked_state, v.c.machine_id).where(v.c.id == vm_id)
            )
        ).one()
    return row.state, row.locked_state, row.machine_id


async def _task(engine: AsyncEngine, task_id: str) -> tuple[str, list[tuple[str, str, str]]]:
    async with engine.connect() as conn:
        state = (
            await conn.execute(select(tables.task.c.state).where(tables.task.c.id == task_id))
        ).scalar_one()
        jobs = (
            await conn.execute(
                select(tables.job.c.type, tables.job.c.state, tables.job.c.rollback_state)
                .where(tables.job.c.task_id == task_id)
                .order_by(tables.job.c.sequence)
            )
        ).all()
    return state, [tuple(j) for j in jobs]


async def _start(
    engine: AsyncEngine, vm_id: int, kind: TaskType, secrets: SecretBox, clock: FakeClock
) -> str:
    started = await start_task(
        engine,
        vm_id,
        kind,
        actor=ACTOR,
        secrets=secrets,
        now=clock(),
        liveness_timeout=LIVENESS,
    )
    return started.task_id


async def _sent_task(engine: AsyncEngine, clock: FakeClock) -> tuple[str, dc.VirtualFactoryTask]:
    sent = Sent()
    await OutboxRelay(engine, sent, clock=clock).drain()
    # The VSM subscriptions a finished task queued go on the rpc queue: not these.
    [(dc_uuid, message)] = [(d, m) for d, s, m in sent.messages if s == "virtualfactory"]
    assert isinstance(message, dc.VirtualFactoryTask)
    return dc_uuid, message


async def _report(
    engine: AsyncEngine,
    dc_uuid: str,
    task: dc.VirtualFactoryTask,
    steps: Sequence[tuple[int, dc.JobState]],
    **extra: str,
) -> None:
    for index, state in steps:
        job = task.jobs[index]
        await apply_notification(
            engine,
            dc.JobNotification(
                dc_uuid=dc_uuid,
                task_id=task.task_id,
                job_id=job.id,
                job_type=job.type,
                vm_uuid=job.definition.uuid,
                state=state,
                at=datetime.now(UTC),
                **extra,
            ),
            now=datetime.now(UTC),
        )


S, D, F = dc.JobState.START, dc.JobState.DONE, dc.JobState.FAILED


async def test_deploy_then_undeploy(
    engine: AsyncEngine, cloud: Cloud, clock: FakeClock, secrets: SecretBox
) -> None:
    host = await machine(engine, cloud, "10.0.0.1")
    one = await vm(engine, cloud, cpu=2, ram=1024)
    task_id = await _start(engine, one, TaskType.DEPLOY, secrets, clock)
    assert await _vm_row(engine, one) == ("LOCKED", "ALLOCATED", host)
    assert (await _task(engine, task_id))[0] == "PENDING"
    dc_uuid, sent = await _sent_task(engine, clock)
    assert sent.task_id == task_id
    assert [j.type for j in sent.jobs] == [dc.JobType.CONFIGURE, dc.JobType.POWER_ON]
    assert sent.jobs[0].connection.address == "10.0.0.1"
    assert sent.jobs[0].definition.display.port == 5900
    # Sent once: the next round finds nothing.
    again = Sent()
    assert await OutboxRelay(engine, again, clock=clock).drain() == 0

    with pytest.raises(Conflict):
        await _start(engine, one, TaskType.POWER_OFF, secrets, clock)  # LOCKED

    await _report(engine, dc_uuid, sent, [(0, S), (0, D), (1, S)])
    state, jobs = await _task(engine, task_id)
    assert state == "STARTED" and [j[1] for j in jobs] == ["DONE", "STARTED"]
    await _report(engine, dc_uuid, sent, [(1, D), (1, D), (0, S)])  # late and repeated
    state, jobs = await _task(engine, task_id)
    assert state == "FINISHED_SUCCESSFULLY" and [j[1] for j in jobs] == ["DONE", "DONE"]
    assert await _vm_row(engine, one) == ("ON", None, host)
    assert (await usage(engine))[host][:2] == (2, 1024)

    task_id = await _start(engine, one, TaskType.UNDEPLOY, secrets, clock)
    dc_uuid, sent = await _sent_task(engine, clock)
    assert [j.type for j in sent.jobs] == [dc.JobType.POWER_OFF, dc.JobType.DECONFIGURE]
    await _report(engine, dc_uuid, sent, [(0, S), (0, D), (1, S), (1, D)])
    assert (await _task(engine, task_id))[0] == "FINISHED_SUCCESSFULLY"
    assert await _vm_row(engine, one) == ("NOT_ALLOCATED", None, None)
    assert (await usage(engine))[host][:2] == (0, 0)


async def test_a_failed_deploy_rolls_back_and_frees(
    engine: AsyncEngine, cloud: Cloud, clock: FakeClock, secrets: SecretBox
) -> None:
    host = await machine(engine, cloud, "10.0.0.1")
    one = await vm(engine, cloud)
    task_id = await _start(engine, one, TaskType.DEPLOY, secrets, clock)
    dc_uuid, sent = await _sent_task(engine, clock)
    await _report(engine, dc_uuid, sent, [(0, S), (0, D), (1, S)])
    await _report(engine, dc_uuid, sent, [(1, F)], error_code="HV-FAILED", error_message="no")
    # Not over until the done CONFIGURE is undone.
    assert (await _task(engine, task_id))[0] == "STARTED"
    await _report(
        engine, dc_uuid, sent, [(0, dc.JobState.ROLLBACK_START), (0, dc.JobState.ROLLBACK_DONE)]
    )
    state, jobs = await _task(engine, task_id)
    assert state == "FINISHED_UNSUCCESSFULLY"
    assert jobs == [
        ("CONFIGURE", "DONE", "ROLLBACK_DONE"),
        ("POWER_ON", "FAILED", "UNKNOWN"),
    ]
    assert await _vm_row(engine, one) == ("NOT_ALLOCATED", None, None)
    assert (await usage(engine))[host][:2] == (0, 0)


async def test_a_failed_state_change_puts_the_vm_back(
    engine: AsyncEngine, cloud: Cloud, clock: FakeClock, secrets: SecretBox
) -> None:
    host = await machine(engine, cloud, "10.0.0.1")
    one = await vm(engine, cloud)
    await _start(engine, one, TaskType.DEPLOY, secrets, clock)
    dc_uuid, sent = await _sent_task(engine, clock)
    await _report(engine, dc_uuid, sent, [(0, D), (1, D)])
    await _start(engine, one, TaskType.PAUSE, secrets, clock)
    dc_uuid, sent = await _sent_task(engine, clock)
    await _report(engine, dc_uuid, sent, [(0, S), (0, F)], error_code="HV-FAILED")
    assert await _vm_row(engine, one) == ("ON", None, host)
    with pytest.raises(Conflict):
        await _start(engine, one, TaskType.RESUME, secrets, clock)  # ON, not PAUSED


async def test_no_room_leaves_the_vm_as_it_was(
    engine: AsyncEngine, cloud: Cloud, clock: FakeClock, secrets: SecretBox
) -> None:
    await machine(engine, cloud, "10.0.0.1", cpu=1)
    one = await vm(engine, cloud, cpu=2)
    with pytest.raises(NoRoom):
        await _start(engine, one, TaskType.DEPLOY, secrets, clock)
    assert await _vm_row(engine, one) == ("NOT_ALLOCATED", None, None)
    async with engine.connect() as conn:
        assert (await conn.execute(select(tables.outbox))).all() == []


async def test_the_outbox_keeps_what_could_not_be_sent(
    engine: AsyncEngine, cloud: Cloud, clock: FakeClock, secrets: SecretBox
) -> None:
    await machine(engine, cloud, "10.0.0.1")
    await _start(engine, await vm(engine, cloud), TaskType.DEPLOY, secrets, clock)

    async def broker_away(dc_uuid: str, service: str, message: Message) -> None:
        raise TemporaryError("the broker is away")

    assert await OutboxRelay(engine, broker_away, clock=clock).drain() == 0
    _, sent = await _sent_task(engine, clock)
    # What is stored is exactly what is sent.
    async with engine.connect() as conn:
        body = (await conn.execute(select(tables.outbox.c.body))).scalar_one()
    assert codec.decode(body.encode(), Inbound) == sent
