"""What the VSM sees moves the VMs; deployed VMs are subscribed, undeployed ones not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from abiquo_central.db import tables
from abiquo_central.infrastructure.datacenters import get_liveness
from abiquo_central.link import NoLink
from abiquo_central.notifications import message_handler
from abiquo_central.tasks.observations import apply_vm_event, subscriptions_of
from abiquo_central.tasks.outbox import OutboxRelay
from abiquo_central.tasks.plans import TaskType
from abiquo_dc.protocol import jobs as dc
from abiquo_dc.protocol.messages import Heartbeat, Message
from abiquo_dc.protocol.monitoring import Subscribe, Unsubscribe, VmEventKind, VmStateChanged
from abiquo_runtime.secrets import SecretBox
from tests.central.allocation.test_allocator import Cloud, cloud, machine, usage, vm
from tests.central.conftest import FakeClock
from tests.central.tasks.test_lifecycle import D, _report, _sent_task, _start, _vm_row

__all__ = ["cloud"]


async def _drain(engine: AsyncEngine, clock: FakeClock) -> list[tuple[str, str, Message]]:
    sent: list[tuple[str, str, Message]] = []

    async def send(dc_uuid: str, service: str, message: Message) -> None:
        sent.append((dc_uuid, service, message))

    await OutboxRelay(engine, send, clock=clock).drain()
    return sent


async def _deployed(
    engine: AsyncEngine, cloud: Cloud, clock: FakeClock, secrets: SecretBox
) -> tuple[int, str, str]:
    """A VM deployed (ON) on 10.0.0.1; its id, uuid and its datacenter's uuid."""
    await machine(engine, cloud, "10.0.0.1")
    one = await vm(engine, cloud, cpu=2, ram=1024)
    await _start(engine, one, TaskType.DEPLOY, secrets, clock)
    dc_uuid, sent = await _sent_task(engine, clock)
    await _report(engine, dc_uuid, sent, [(0, D), (1, D)])
    return one, sent.jobs[0].definition.uuid, dc_uuid


def _event(
    dc_uuid: str,
    vm_uuid: str,
    kind: VmEventKind,
    state: dc.ObservedState,
    clock: FakeClock,
    *,
    host: str = "10.0.0.1",
    sequence: int = 1,
) -> VmStateChanged:
    return VmStateChanged(
        dc_uuid=dc_uuid,
        vm_uuid=vm_uuid,
        host=host,
        event=kind,
        state=state,
        # The task's notifications were applied at the wall clock's now.
        observed_at=datetime.now(UTC) + timedelta(seconds=sequence),
        sequence=sequence,
    )


async def test_a_deployed_vm_is_subscribed_and_follows_its_events(
    engine: AsyncEngine, cloud: Cloud, clock: FakeClock, secrets: SecretBox
) -> None:
    one, vm_uuid, dc_uuid = await _deployed(engine, cloud, clock, secrets)
    [(to, service, message)] = await _drain(engine, clock)
    assert (to, service) == (dc_uuid, "rpc") and isinstance(message, Subscribe)
    [sub] = message.subscriptions
    assert (sub.vm_uuid, sub.host, sub.state) == (vm_uuid, "10.0.0.1", dc.ObservedState.ON)
    assert [s.vm_uuid for s in await subscriptions_of(engine, dc_uuid)] == [vm_uuid]

    clock.advance(5)
    await apply_vm_event(
        engine,
        _event(dc_uuid, vm_uuid, VmEventKind.POWER_OFF, dc.ObservedState.OFF, clock),
        now=datetime.now(UTC),
    )
    assert (await _vm_row(engine, one))[0] == "OFF"
    # Seen before central's last change of the VM: stale, ignored.
    stale = _event(dc_uuid, vm_uuid, VmEventKind.POWER_ON, dc.ObservedState.ON, clock, sequence=-60)
    await apply_vm_event(engine, stale, now=datetime.now(UTC))
    assert (await _vm_row(engine, one))[0] == "OFF"

    clock.advance(5)
    host_two = await machine(engine, cloud, "10.0.0.2")
    moved = _event(
        dc_uuid, vm_uuid, VmEventKind.MOVED, dc.ObservedState.ON, clock, host="10.0.0.2", sequence=2
    )
    await apply_vm_event(engine, moved, now=datetime.now(UTC))
    assert await _vm_row(engine, one) == ("ON", None, host_two)
    used = await usage(engine)
    assert used[host_two][:2] == (2, 1024)

    clock.advance(5)
    gone = _event(
        dc_uuid, vm_uuid, VmEventKind.DESTROYED, dc.ObservedState.UNKNOWN, clock, sequence=3
    )
    await apply_vm_event(engine, gone, now=datetime.now(UTC))
    assert await _vm_row(engine, one) == ("NOT_ALLOCATED", None, None)
    assert all(u[:2] == (0, 0) for u in (await usage(engine)).values())
    [(_, _, message)] = await _drain(engine, clock)
    assert isinstance(message, Unsubscribe) and message.vm_uuids == [vm_uuid]
    ev = tables.event
    async with engine.connect() as conn:
        actions = (
            (
                await conn.execute(
                    select(ev.c.action).where(ev.c.virtual_machine_id == one).order_by(ev.c.id)
                )
            )
            .scalars()
            .all()
        )
    assert actions[-3:] == ["VM_POWEROFF", "VM_MOVED", "VM_DESTROY"]


async def test_undeploy_unsubscribes(
    engine: AsyncEngine, cloud: Cloud, clock: FakeClock, secrets: SecretBox
) -> None:
    one, _, _ = await _deployed(engine, cloud, clock, secrets)
    await _drain(engine, clock)
    await _start(engine, one, TaskType.UNDEPLOY, secrets, clock)
    dc_uuid, sent = await _sent_task(engine, clock)
    await _report(engine, dc_uuid, sent, [(0, D), (1, D)])
    [(_, service, message)] = await _drain(engine, clock)
    assert service == "rpc" and isinstance(message, Unsubscribe)
    assert await subscriptions_of(engine, dc_uuid) == []


async def test_a_datacenter_back_from_an_absence_gets_its_vms_again(
    engine: AsyncEngine, cloud: Cloud, clock: FakeClock, secrets: SecretBox
) -> None:
    _, vm_uuid, dc_uuid = await _deployed(engine, cloud, clock, secrets)
    await _drain(engine, clock)
    handle = message_handler(
        engine=engine, link=NoLink(), secrets=secrets, request_timeout=5.0, liveness_timeout=15.0
    )
    before = await get_liveness(engine, dc_uuid)
    assert before is not None

    def beat(sequence: int, seconds_later: float) -> Heartbeat:
        return Heartbeat(
            dc_uuid=dc_uuid,
            name="dc",
            sequence=sequence,
            started_at=before.started_at,
            sent_at=before.last_seen + timedelta(seconds=seconds_later),
            http_url="http://dc",
            services={},
        )

    await handle(beat(before.sequence + 1, 5))  # on time: nothing to reconcile
    assert await _drain(engine, clock) == []
    await handle(beat(before.sequence + 2, 60))  # after an absence
    [(to, service, message)] = await _drain(engine, clock)
    assert (to, service) == (dc_uuid, "rpc") and isinstance(message, Subscribe)
    assert [(s.vm_uuid, s.state) for s in message.subscriptions] == [(vm_uuid, dc.ObservedState.ON)]


async def test_events_seen_together_are_all_applied_whenever_they_arrive(
    engine: AsyncEngine, cloud: Cloud, clock: FakeClock, secrets: SecretBox
) -> None:
    # A domain destroyed on its host: stopped, then undefined, both seen in the same
    # instant; the VSM sends the DESTROYED later (after its move window). The POWER_OFF
    # applied meanwhile does not make the DESTROYED look older than central's last change.
    one, vm_uuid, dc_uuid = await _deployed(engine, cloud, clock, secrets)
    await _drain(engine, clock)
    off = _event(dc_uuid, vm_uuid, VmEventKind.POWER_OFF, dc.ObservedState.OFF, clock)
    gone = msgspec.structs.replace(
        off, event=VmEventKind.DESTROYED, state=dc.ObservedState.ABSENT, sequence=2
    )
    await apply_vm_event(engine, off, now=off.observed_at + timedelta(seconds=1))
    assert (await _vm_row(engine, one))[0] == "OFF"
    await apply_vm_event(engine, gone, now=off.observed_at + timedelta(seconds=3))
    assert await _vm_row(engine, one) == ("NOT_ALLOCATED", None, None)
