"""The staged shutdown: stages in order, one log line each, a timeout naming what runs."""

from __future__ import annotations

import asyncio
import logging

import pytest

from abiquo_runtime.shutdown import Stage, run_stages
from abiquo_runtime.tasks import Supervisor


def stage_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "shutdown stage" in r.getMessage()]


async def test_stages_run_in_order_with_one_line_each(caplog: pytest.LogCaptureFixture) -> None:
    order: list[str] = []

    def step(name: str):  # type: ignore[no-untyped-def]
        async def run() -> None:
            order.append(name)

        return run

    stages = [Stage("stop accepting", 1), Stage("drain", 1), Stage("close", 1)]
    for stage in stages:
        stage.add("a", step(f"{stage.name}/a"))
        stage.add("b", step(f"{stage.name}/b"))
    with caplog.at_level(logging.INFO):
        assert await run_stages(stages)
    assert order == [
        "stop accepting/a",
        "stop accepting/b",
        "drain/a",
        "drain/b",
        "close/a",
        "close/b",
    ]
    lines = stage_lines(caplog)
    assert len(lines) == 3
    assert all("shutdown stage done" in line for line in lines)


async def test_a_stage_that_overruns_names_what_still_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tasks = Supervisor("worker")
    tasks.spawn(asyncio.Event().wait(), name="stuck job")
    stuck = Stage("drain", 0.05, still_running=tasks.running)
    stuck.add("slow step", lambda: asyncio.sleep(10))
    after = Stage("close", 1)
    ran: list[str] = []

    async def close() -> None:
        ran.append("close")
        await tasks.close()

    after.add("close", close)
    with caplog.at_level(logging.INFO):
        assert not await run_stages([stuck, after])
    assert ran == ["close"]  # the next stage runs all the same
    timed_out = [line for line in stage_lines(caplog) if "timed out" in line]
    assert len(timed_out) == 1
    assert "slow step" in timed_out[0] and "worker:stuck job" in timed_out[0]


async def test_a_failing_step_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    done: list[str] = []

    async def broken() -> None:
        raise RuntimeError("boom")

    async def fine() -> None:
        done.append("fine")

    stage = Stage("close", 1)
    stage.add("broken", broken)
    stage.add("fine", fine)
    assert await run_stages([stage])
    assert done == ["fine"]
    assert any("shutdown step failed" in r.getMessage() for r in caplog.records)
