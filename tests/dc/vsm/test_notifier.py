"""The notifier: observations in, each change of a subscribed VM out once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from abiquo_dc.protocol.jobs import ObservedState
from abiquo_dc.protocol.monitoring import Subscription, VmStateChanged
from abiquo_dc.vsm.monitor import Kind, Observation, Seen, now_ms
from abiquo_dc.vsm.notifier import Notifier
from abiquo_dc.vsm.store import MemoryStore

ON, OFF, PAUSED = ObservedState.ON, ObservedState.OFF, ObservedState.PAUSED


@dataclass
class Setup:
    store: MemoryStore
    notifier: Notifier
    sent: list[VmStateChanged] = field(default_factory=list)
    gate: asyncio.Event = field(default_factory=asyncio.Event)

    async def see(self, host: str, uuid: str, state: ObservedState) -> None:
        await self.notifier.handle(
            Observation(
                kind=Kind.STATE, host=host, vms=[Seen(uuid, f"vm-{uuid}", state)], at=now_ms()
            )
        )

    async def listing(self, host: str, *vms: tuple[str, ObservedState]) -> None:
        await self.notifier.handle(
            Observation(
                kind=Kind.LISTING,
                host=host,
                vms=[Seen(u, f"vm-{u}", s) for u, s in vms],
                at=now_ms(),
            )
        )

    async def settle(self) -> list[tuple[str, str, str]]:
        """Wait until the buffer is out; the events as (vm, event, host)."""
        async with asyncio.timeout(5):
            while self.notifier.backlog():  # noqa: ASYNC110 - the sender signals nothing
                await asyncio.sleep(0.005)
        return [(e.vm_uuid, e.event.value, e.host) for e in self.sent]


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    store = MemoryStore()
    await store.mark()
    sent: list[VmStateChanged] = []
    gate = asyncio.Event()
    gate.set()

    async def send(event: VmStateChanged) -> None:
        await gate.wait()
        sent.append(event)

    notifier = Notifier(store=store, send=send, dc_uuid="dc", buffer_size=5, move_window=0.1)
    sender = asyncio.ensure_future(notifier.run_sender())
    await store.subscribe(
        [Subscription(vm_uuid=u, vm_name=f"vm-{u}", host="h1") for u in ("a", "b", "c")]
    )
    yield Setup(store, notifier, sent, gate)
    sender.cancel()
    notifier.close()
    await asyncio.gather(sender, return_exceptions=True)


async def test_only_changes_are_sent(setup: Setup) -> None:
    await setup.see("h1", "a", ON)
    await setup.see("h1", "a", ON)
    await setup.see("h1", "a", PAUSED)
    await setup.see("h1", "a", ON)
    await setup.see("h1", "a", OFF)
    assert await setup.settle() == [
        ("a", "POWER_ON", "h1"),
        ("a", "PAUSED", "h1"),
        ("a", "RESUMED", "h1"),
        ("a", "POWER_OFF", "h1"),
    ]
    sequences = [e.sequence for e in setup.sent]
    assert sequences == sorted(sequences) and len(set(sequences)) == 4


async def test_what_central_believes_is_the_first_reference(setup: Setup) -> None:
    await setup.store.subscribe([Subscription(vm_uuid="d", host="h1", state=ON)])
    await setup.see("h1", "d", ON)
    assert await setup.settle() == []
    await setup.see("h1", "d", OFF)
    assert await setup.settle() == [("d", "POWER_OFF", "h1")]


async def test_a_vm_on_another_host_is_moved_then_its_state(setup: Setup) -> None:
    await setup.see("h1", "a", ON)
    await setup.see("h2", "a", ON)
    assert await setup.settle() == [
        ("a", "POWER_ON", "h1"),
        ("a", "MOVED", "h2"),
        ("a", "POWER_ON", "h2"),
    ]
    assert setup.sent[1].previous_host == "h1"


async def test_gone_then_seen_elsewhere_is_a_move_not_a_destroy(setup: Setup) -> None:
    await setup.listing("h1", ("a", ON), ("b", ON))
    await setup.listing("h1", ("b", ON))  # a left h1 ...
    await setup.see("h2", "a", ON)  # ... and shows up on h2 within the window
    await asyncio.sleep(0.2)
    events = await setup.settle()
    assert ("a", "DESTROYED", "h1") not in events
    assert events[-2:] == [("a", "MOVED", "h2"), ("a", "POWER_ON", "h2")]


async def test_gone_for_good_is_destroyed_once(setup: Setup) -> None:
    await setup.listing("h1", ("a", ON), ("b", OFF))
    await setup.listing("h1", ("b", OFF))
    await setup.listing("h1", ("b", OFF))
    await asyncio.sleep(0.2)
    events = await setup.settle()
    assert events.count(("a", "DESTROYED", "h1")) == 1
    assert setup.sent[-1].state is ObservedState.ABSENT


async def test_a_lost_host_makes_its_vms_unknown_then_true_again(setup: Setup) -> None:
    await setup.listing("h1", ("a", ON), ("b", OFF))
    await setup.notifier.handle(Observation(kind=Kind.HOST_LOST, host="h1", vms=[], at=now_ms()))
    await setup.listing("h1", ("a", ON), ("b", OFF))
    assert await setup.settle() == [
        ("a", "POWER_ON", "h1"),
        ("b", "POWER_OFF", "h1"),
        ("a", "UNKNOWN", "h1"),
        ("b", "UNKNOWN", "h1"),
        ("a", "POWER_ON", "h1"),
        ("b", "POWER_OFF", "h1"),
    ]


async def test_vms_nobody_subscribed_to_are_counted_and_dropped(setup: Setup) -> None:
    await setup.see("h1", "stranger", ON)
    await setup.listing("h1", ("other", OFF), ("a", ON))
    assert await setup.settle() == [("a", "POWER_ON", "h1")]
    assert setup.notifier.dropped == 2


async def test_past_the_buffer_vms_are_sent_as_they_are(setup: Setup) -> None:
    setup.gate.clear()  # the broker is away
    await setup.see("h1", "a", ON)
    await setup.see("h1", "a", OFF)
    await setup.see("h1", "b", ON)
    await setup.see("h1", "b", OFF)
    await setup.see("h1", "c", ON)
    # The buffer holds five (one of them is in the sender's hands): these do not fit.
    await setup.see("h1", "c", PAUSED)
    await setup.see("h1", "a", ON)
    assert setup.notifier.overflowed >= 1
    setup.gate.set()
    await asyncio.sleep(0.1)
    events = await setup.settle()
    # Every VM ends as it is now, whatever was skipped in between.
    last = {vm: event for vm, event, _ in events}
    assert last == {"a": "POWER_ON", "b": "POWER_OFF", "c": "PAUSED"}
