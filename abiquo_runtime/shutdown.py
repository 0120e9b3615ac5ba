"""A staged shutdown: stop accepting, drain, close; each stage bounded by its own timeout.

Each stage runs its steps concurrently and logs exactly one line: done, with its
duration, or timed out, naming the steps and tasks still running so that an operator sees
what held the process up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import structlog

from abiquo_runtime.settings import ShutdownSettings

Step = tuple[str, Callable[[], Awaitable[object]]]


@dataclass
class Stage:
    name: str
    timeout: float
    steps: list[Step] = field(default_factory=list)
    # Called when the stage times out, to name what is still running (supervisor tasks).
    still_running: Callable[[], list[str]] | None = None

    def add(self, name: str, step: Callable[[], Awaitable[object]]) -> None:
        self.steps.append((name, step))


async def _guarded(name: str, step: Callable[[], Awaitable[object]]) -> None:
    try:
        await step()
    except asyncio.CancelledError:
        raise
    except Exception:
        structlog.get_logger("abiquo.shutdown").exception("shutdown step failed", step=name)


async def run_stages(stages: Sequence[Stage]) -> bool:
    """Run each stage in order; True when every stage finished within its timeout."""
    log = structlog.get_logger("abiquo.shutdown")
    clean = True
    for stage in stages:
        started = time.monotonic()
        tasks = {
            asyncio.create_task(_guarded(name, step), name=f"shutdown:{stage.name}:{name}"): name
            for name, step in stage.steps
        }
        pending: set[asyncio.Task[None]] = set()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=stage.timeout)
        elapsed = round(time.monotonic() - started, 3)
        if pending:
            clean = False
            still = sorted(tasks[t] for t in pending)
            if stage.still_running is not None:
                still += stage.still_running()
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=1.0)
            log.warning(
                "shutdown stage timed out",
                stage=stage.name,
                seconds=elapsed,
                timeout=stage.timeout,
                still_running=still,
            )
        else:
            log.info("shutdown stage done", stage=stage.name, seconds=elapsed)
    return clean


def three_stages(
    timeouts: ShutdownSettings,
    *,
    stop_accepting: list[Step],
    drain: list[Step],
    close: list[Step],
    still_running: Callable[[], list[str]] | None = None,
) -> list[Stage]:
    """The shutdown every program runs: stop accepting, drain, close."""
    return [
        Stage("stop accepting", timeouts.stop_accepting_timeout, stop_accepting, still_running),
        Stage("drain", timeouts.drain_timeout, drain, still_running),
        Stage("close", timeouts.close_timeout, close, still_running),
    ]
