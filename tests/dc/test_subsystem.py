"""The subsystem lifecycle: starting, running, retrying with backoff, failed, stopped."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from abiquo_dc.bus import Bus
from abiquo_dc.protocol.messages import ServiceState, SubsystemStateChanged
from abiquo_dc.subsystem import Subsystem
from abiquo_runtime.backoff import Backoff
from abiquo_runtime.errors import TemporaryError


class Flaky(Subsystem):
    name = "flaky"
    path = "flaky"
    check_answers_uuid = True

    def __init__(self, *, bus: Bus, failures: int, error: Exception) -> None:
        super().__init__(
            bus=bus, dc_uuid="dc-1", backoff=lambda: Backoff(initial=0.01, maximum=0.02)
        )
        self.failures = failures
        self.error = error
        self.setups = 0
        self.teardowns = 0

    async def setup(self) -> None:
        self.setups += 1
        if self.setups <= self.failures:
            raise self.error

    async def teardown(self) -> None:
        self.teardowns += 1


@pytest.fixture
async def bus() -> AsyncIterator[Bus]:
    bus = Bus()
    yield bus
    await bus.close()


async def record_states(bus: Bus) -> list[ServiceState]:
    states: list[ServiceState] = []

    async def on_change(m: SubsystemStateChanged) -> None:
        states.append(m.state)

    bus.subscribe(SubsystemStateChanged, on_change)
    return states


async def test_temporary_errors_retry_until_running(bus: Bus) -> None:
    states = await record_states(bus)
    flaky = Flaky(bus=bus, failures=3, error=TemporaryError("hypervisor away"))
    await flaky.start()
    await flaky.wait_running(5)
    assert flaky.setups == 4
    await flaky.stop()
    assert await bus.drain(5)
    assert states[0] is ServiceState.STARTING
    # Repeats of the same RETRYING reason are not sent again: central needs the change.
    assert ServiceState.RETRYING in states
    assert states[-2:] == [ServiceState.RUNNING, ServiceState.STOPPED]
    # A failed start is undone each time, and the final stop tears the running one down.
    assert flaky.teardowns == 4


async def test_a_permanent_error_fails_without_retry(bus: Bus) -> None:
    states = await record_states(bus)
    flaky = Flaky(bus=bus, failures=1, error=ValueError("bad settings"))
    await flaky.start()
    with pytest.raises(RuntimeError, match="bad settings"):
        await flaky.wait_running(5)
    assert flaky.state is ServiceState.FAILED
    assert flaky.setups == 1
    await flaky.stop()
    assert await bus.drain(5)
    assert states == [ServiceState.STARTING, ServiceState.FAILED, ServiceState.STOPPED]


async def test_check_answers_by_state(bus: Bus) -> None:
    flaky = Flaky(bus=bus, failures=10_000, error=TemporaryError("not yet"))
    app = web.Application()
    app.add_routes(flaky.all_routes())
    async with TestClient(TestServer(app)) as client:
        await flaky.start()
        response = await client.get("/flaky/check")
        assert response.status == 503
        flaky.failures = 0
        await flaky.wait_running(5)
        response = await client.get("/flaky/check")
        assert response.status == 200
        assert await response.text() == "dc-1"
        await flaky.stop()
