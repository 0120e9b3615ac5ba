"""Lifecycle events from libvirt's test driver, long-polled through thrift from a cursor."""

from __future__ import annotations

import asyncio
import time
from types import ModuleType
from typing import Any

import pytest

from aim.events import EventGroup
from aim.libvirt_host import LibvirtHost
from tests.aim.test_domains import aim, domain_xml, domains, node_uri

__all__ = ["node_uri"]  # the fixture, imported to be used here


def events(history: int) -> Any:
    def make(contract: ModuleType, host: LibvirtHost) -> EventGroup:
        return EventGroup(contract=contract, host=host, history=history)

    return make


async def drive_lifecycle(client: Any) -> str:
    uid: str = await client.defineDomain(domain_xml())
    await client.powerOn(uid)
    await client.pause(uid)
    await client.resume(uid)
    await client.powerOff(uid)
    await client.undefineDomain(uid)
    return uid


LIFECYCLE = ["CREATED", "POWER_ON", "PAUSED", "RESUMED", "POWER_OFF", "DESTROYED"]


async def collect(client: Any, cursor: int, count: int) -> list[Any]:
    got: list[Any] = []
    while len(got) < count:
        batch = await client.waitEvents(cursor, 100, 2000)
        assert batch.events, f"only {len(got)} of {count} events came"
        got += batch.events
        cursor = batch.cursor
    return got


async def test_a_lifecycle_in_order_and_replayed(contract: ModuleType, node_uri: str) -> None:
    names = contract.EventType._VALUES_TO_NAMES
    async with aim(contract, node_uri, [domains, events(100)]) as (client, _):
        uid = await drive_lifecycle(client)
        got = await collect(client, 0, 6)
        assert [names[e.type] for e in got] == LIFECYCLE
        assert [e.sequence for e in got] == [1, 2, 3, 4, 5, 6]
        assert {(e.domainUuid, e.domainName) for e in got} == {(uid, "vm1")}
        assert all(abs(e.timestamp - time.time() * 1000) < 60_000 for e in got)
        # From an older cursor, the same again; a small max pages through them.
        again = await client.waitEvents(2, 3, 0)
        assert [e.sequence for e in again.events] == [3, 4, 5]
        assert (again.cursor, again.resync) == (5, False)
        rest = await client.waitEvents(again.cursor, 10, 0)
        assert [e.sequence for e in rest.events] == [6]
        # Nothing new: an empty batch after the timeout, the cursor unchanged.
        started = time.monotonic()
        empty = await client.waitEvents(6, 10, 300)
        assert time.monotonic() - started >= 0.25
        assert (empty.events, empty.cursor, empty.resync) == ([], 6, False)


async def test_a_long_poll_answers_when_an_event_comes(contract: ModuleType, node_uri: str) -> None:
    async with aim(contract, node_uri, [domains, events(100)]) as (client, host):
        started = time.monotonic()
        waiting = asyncio.ensure_future(client.waitEvents(0, 10, 20_000))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        # Through libvirt directly: the thrift client is busy with the long poll.
        await host.call(host.conn.defineXML, domain_xml())
        batch = await asyncio.wait_for(waiting, 5)
        assert time.monotonic() - started < 5
        assert [e.type for e in batch.events] == [contract.EventType.CREATED]
        assert batch.cursor == 1


async def test_a_short_history_asks_to_resync(contract: ModuleType, node_uri: str) -> None:
    async with aim(contract, node_uri, [domains, events(3)]) as (client, _):
        await drive_lifecycle(client)
        await collect_until(client, 6)
        batch = await client.waitEvents(0, 100, 0)
        assert batch.resync
        assert [e.sequence for e in batch.events] == [4, 5, 6]
        assert batch.cursor == 6
        assert not (await client.waitEvents(3, 100, 0)).resync  # nothing lost after 3
        assert (await client.waitEvents(2, 100, 0)).resync
        # A cursor from before a restart of the AIM: resync, back to the last sequence.
        restarted = await client.waitEvents(50, 100, 0)
        assert (restarted.events, restarted.cursor, restarted.resync) == ([], 6, True)


async def collect_until(client: Any, sequence: int) -> None:
    cursor = 0
    while cursor < sequence:
        cursor = (await client.waitEvents(cursor, 100, 2000)).cursor


@pytest.mark.parametrize(
    ("cursor", "max_", "timeout"), [(0, 0, 0), (0, 1001, 0), (-1, 1, 0), (0, 1, -1), (None, 1, 0)]
)
async def test_invalid_requests(
    contract: ModuleType, node_uri: str, cursor: int | None, max_: int, timeout: int
) -> None:
    async with aim(contract, node_uri, [events(10)]) as (client, _):
        with pytest.raises(contract.EventsException) as bad:
            await client.waitEvents(cursor, max_, timeout)
        assert bad.value.code == "EVENTS-INVALID"
        assert (await client.waitEvents(0, 1, 0)).events == []


async def test_a_domain_paused_before_the_aim_started_reports_its_resume(
    contract: ModuleType, node_uri: str
) -> None:
    names = contract.EventType._VALUES_TO_NAMES
    host = LibvirtHost(node_uri, threads=2, call_timeout=10)
    await host.start()
    try:
        dom = await host.call(host.conn.defineXML, domain_xml())
        await host.call(dom.create)
        await host.call(dom.suspend)
        group = EventGroup(contract=contract, host=host, history=10)
        await group.start()
        try:
            await host.call(dom.resume)
            batch = await group.waitEvents(0, 10, 2_000)
            assert [names[e.type] for e in batch.events] == ["RESUMED"]
        finally:
            await group.close()
    finally:
        await host.close()
