"""Background tasks with an owner, a name and a guard.

Nothing in the programs calls asyncio.create_task bare: a task is spawned on a
Supervisor, which keeps a strong reference, logs a failure with its traceback, logs a
task meant to run forever that returned, and at shutdown tells what is still running.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import structlog

T = TypeVar("T")


class Supervisor:
    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        self._log = structlog.get_logger("abiquo.tasks").bind(owner=owner)

    def spawn(
        self, coro: Coroutine[Any, Any, T], *, name: str, forever: bool = False
    ) -> asyncio.Task[T]:
        """Start `coro` as a named task; `forever` marks a loop whose return is a fault."""
        if self._closing:
            coro.close()
            raise RuntimeError(f"{self.owner} is closing: cannot start {name}")
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.owner}:{name}")
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._done(t, forever))
        return task

    def _done(self, task: asyncio.Task[Any], forever: bool) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._log.error("task failed", task=task.get_name(), exc_info=exc)
        elif forever and not self._closing:
            self._log.error("task ended unexpectedly", task=task.get_name())

    def running(self) -> list[str]:
        return sorted(t.get_name() for t in self._tasks if not t.done())

    def __len__(self) -> int:
        return len(self._tasks)

    async def wait(self, timeout: float) -> list[str]:
        """Wait for the tasks to end by themselves; return the names still running."""
        pending = [t for t in self._tasks if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout)
        return self.running()

    async def close(self, timeout: float = 5.0) -> list[str]:
        """Cancel every task and wait for them; return those that ignored the cancel."""
        self._closing = True
        pending = [t for t in self._tasks if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=timeout)
        left = self.running()
        if left:
            self._log.warning("tasks still running after cancel", tasks=left)
        return left
