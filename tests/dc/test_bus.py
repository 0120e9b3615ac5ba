"""The datacenter's in-process bus: delivery, isolation, request/reply, correlation."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from abiquo_dc.bus import Bus, NoHandler, RequestTimeout
from abiquo_dc.protocol.messages import (
    CheckServices,
    Message,
    ServicesStatus,
    ServiceState,
)
from abiquo_runtime.correlation import correlation, current_correlation_id


@pytest.fixture
async def bus() -> AsyncIterator[Bus]:
    bus = Bus(queue_size=8)
    yield bus
    await bus.close()


def check(dc: str = "dc-1") -> CheckServices:
    return CheckServices(dc_uuid=dc)


async def test_listeners_get_every_message_in_order(bus: Bus) -> None:
    got: list[str] = []
    bus.subscribe(CheckServices, lambda m: _append(got, m.dc_uuid))
    for i in range(20):
        await bus.publish(check(f"dc-{i}"))
    assert await bus.drain(5)
    assert got == [f"dc-{i}" for i in range(20)]


async def _append(into: list[str], value: str) -> None:
    into.append(value)


async def test_a_base_class_subscription_sees_every_subclass(bus: Bus) -> None:
    seen: list[type[Message]] = []

    async def any_message(m: Message) -> None:
        seen.append(type(m))

    bus.subscribe(Message, any_message)
    await bus.publish(check())
    await bus.publish(ServicesStatus(dc_uuid="x", services={}))
    assert await bus.drain(5)
    assert seen == [CheckServices, ServicesStatus]


async def test_unsubscribe_stops_delivery(bus: Bus) -> None:
    got: list[str] = []
    unsubscribe = bus.subscribe(CheckServices, lambda m: _append(got, m.dc_uuid))
    await bus.publish(check("first"))
    assert await bus.drain(5)
    unsubscribe()
    unsubscribe()  # twice is harmless
    await bus.publish(check("second"))
    assert await bus.drain(5)
    assert got == ["first"]


async def test_a_failing_listener_is_logged_and_isolated(
    bus: Bus, caplog: pytest.LogCaptureFixture
) -> None:
    good: list[str] = []

    async def broken(m: CheckServices) -> None:
        raise RuntimeError("listener bug")

    bus.subscribe(CheckServices, broken, name="broken")
    bus.subscribe(CheckServices, lambda m: _append(good, m.dc_uuid))
    with caplog.at_level(logging.ERROR):
        await bus.publish(check("a"))  # the publisher sees nothing of the failure
        await bus.publish(check("b"))
        assert await bus.drain(5)
    assert good == ["a", "b"]
    # The broken listener goes on receiving after its failure, and each one is logged.
    assert sum("listener failed" in r.getMessage() for r in caplog.records) == 2


async def test_a_slow_listener_pushes_back_instead_of_dropping(bus: Bus) -> None:
    release = asyncio.Event()
    got: list[str] = []

    async def slow(m: CheckServices) -> None:
        await release.wait()
        got.append(m.dc_uuid)

    bus.subscribe(CheckServices, slow)

    async def publish_many() -> None:
        for i in range(30):
            await bus.publish(check(str(i)))

    publisher = asyncio.ensure_future(publish_many())
    await asyncio.sleep(0.05)
    assert not publisher.done()  # the queue (8) is full: the publisher waits
    release.set()
    await asyncio.wait_for(publisher, 5)
    assert await bus.drain(5)
    assert got == [str(i) for i in range(30)]


async def test_request_reply(bus: Bus) -> None:
    async def serve(m: CheckServices) -> ServicesStatus:
        return ServicesStatus(dc_uuid=m.dc_uuid, services={"am": ServiceState.RUNNING})

    bus.serve(CheckServices, serve)
    reply = await bus.request(check("dc-9"), timeout=1)
    assert isinstance(reply, ServicesStatus)
    assert reply.dc_uuid == "dc-9"
    with pytest.raises(ValueError):
        bus.serve(CheckServices, serve)


async def test_request_without_handler_and_timeout(bus: Bus) -> None:
    with pytest.raises(NoHandler):
        await bus.request(check(), timeout=1)

    async def never(m: CheckServices) -> None:
        await asyncio.Event().wait()

    bus.serve(CheckServices, never)
    with pytest.raises(RequestTimeout):
        await bus.request(check(), timeout=0.05)


async def test_request_raises_what_the_handler_raised(bus: Bus) -> None:
    async def broken(m: CheckServices) -> None:
        raise LookupError("no such thing")

    bus.serve(CheckServices, broken)
    with pytest.raises(LookupError):
        await bus.request(check(), timeout=1)


async def test_correlation_id_follows_every_message_caused(bus: Bus) -> None:
    seen: list[tuple[str, str | None]] = []

    async def first(m: CheckServices) -> None:
        seen.append((m.correlation_id, current_correlation_id()))
        # What a listener publishes carries the id of the message it handles.
        await bus.publish(ServicesStatus(dc_uuid=m.dc_uuid, services={}))

    async def second(m: ServicesStatus) -> None:
        seen.append((m.correlation_id, current_correlation_id()))

    bus.subscribe(CheckServices, first)
    bus.subscribe(ServicesStatus, second)
    with correlation("req-42"):
        await bus.publish(check())
    assert await bus.drain(5)
    assert seen == [("req-42", "req-42"), ("req-42", "req-42")]


async def test_a_message_outside_any_work_gets_a_fresh_id(bus: Bus) -> None:
    ids: list[str] = []
    bus.subscribe(CheckServices, lambda m: _append(ids, m.correlation_id))
    await bus.publish(check())
    await bus.publish(check())
    assert await bus.drain(5)
    assert all(ids) and ids[0] != ids[1]


async def test_close_ends_every_listener_task() -> None:
    bus = Bus()
    bus.subscribe(CheckServices, lambda m: _append([], m.dc_uuid))
    await bus.close()
    with pytest.raises(RuntimeError):
        await bus.publish(check())
