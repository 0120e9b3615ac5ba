"""The guard that fails tests whose loop was blocked: it must see a synchronous call."""

from __future__ import annotations

import asyncio
import time

from tests import loopguard


async def test_a_synchronous_sleep_is_caught() -> None:
    loopguard.take()
    time.sleep(0.15)  # noqa: ASYNC251 - the very thing the guard is for
    await asyncio.sleep(0)
    found = loopguard.take()
    assert len(found) == 1
    assert "ran 15" in found[0] or "ran 1" in found[0]


async def test_busy_computation_is_caught() -> None:
    loopguard.take()
    deadline = time.perf_counter() + 0.15
    while time.perf_counter() < deadline:
        pass
    await asyncio.sleep(0)
    assert len(loopguard.take()) == 1


async def test_awaiting_is_not_blocking() -> None:
    loopguard.take()
    await asyncio.sleep(0.15)
    await asyncio.to_thread(time.sleep, 0.15)
    assert loopguard.take() == []
