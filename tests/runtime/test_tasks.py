"""Guarded background tasks: named, owned, failures and unexpected ends logged."""

from __future__ import annotations

import asyncio
import logging

import pytest

from abiquo_runtime.tasks import Supervisor


async def test_failure_is_logged_with_the_task_name(caplog: pytest.LogCaptureFixture) -> None:
    tasks = Supervisor("owner")

    async def broken() -> None:
        raise ValueError("bad")

    with caplog.at_level(logging.ERROR):
        task = tasks.spawn(broken(), name="job")
        await asyncio.wait([task])
    messages = [r.getMessage() for r in caplog.records]
    assert any("task failed" in m and "owner:job" in m for m in messages)
    assert tasks.running() == []


async def test_a_forever_task_that_returns_is_a_fault(caplog: pytest.LogCaptureFixture) -> None:
    tasks = Supervisor("owner")

    async def quits() -> None:
        return None

    with caplog.at_level(logging.ERROR):
        await asyncio.wait([tasks.spawn(quits(), name="loop", forever=True)])
    assert any("ended unexpectedly" in r.getMessage() for r in caplog.records)


async def test_close_cancels_and_reports_what_ignores_it() -> None:
    tasks = Supervisor("owner")
    started = asyncio.Event()

    async def stubborn() -> None:
        started.set()
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                await asyncio.sleep(0.3)  # cleans up slowly
                return

    tasks.spawn(stubborn(), name="stubborn")
    tasks.spawn(asyncio.Event().wait(), name="polite")
    await started.wait()
    assert tasks.running() == ["owner:polite", "owner:stubborn"]
    assert await tasks.close(timeout=0.05) == ["owner:stubborn"]
    assert await tasks.wait(2) == []
    with pytest.raises(RuntimeError):
        tasks.spawn(asyncio.sleep(0), name="late")
