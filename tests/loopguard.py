"""Catching a blocked event loop, and only a blocked one.

Every callback the loop runs (asyncio.Handle._run: task steps, call_soon, timers) is
timed. Wall-clock time alone would blame the loop for the time the kernel left its thread
waiting for a CPU — on a shared 2-core machine running MariaDB and RabbitMQ beside the
tests, that happens — so the time the thread spent runnable but not running (from
/proc/thread-self/schedstat) is taken off: what is left is time spent computing or
blocked in a synchronous call (sleep, file or socket I/O, a lock), which is what the
guard is for.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable

LIMIT = 0.1
_local = threading.local()
_found: list[str] = []
_original: Callable[[asyncio.Handle], None] | None = None


def _run_queue_wait() -> int:
    """Nanoseconds this thread has spent waiting for a CPU since it started."""
    fd = getattr(_local, "fd", None)
    if fd is None:
        fd = _local.fd = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
    return int(os.pread(fd, 64, 0).split()[1])


def _timed_run(handle: asyncio.Handle) -> None:
    assert _original is not None
    started = time.perf_counter()
    waited_before = _run_queue_wait()
    try:
        _original(handle)
    finally:
        wall = time.perf_counter() - started
        if wall >= LIMIT:
            waited = (_run_queue_wait() - waited_before) / 1e9
            if wall - waited >= LIMIT:
                _found.append(
                    f"{handle!r} ran {wall * 1000:.0f} ms "
                    f"({waited * 1000:.0f} ms of it waiting for a CPU)"
                )


def install() -> None:
    """Time every loop callback from now on (idempotent)."""
    global _original
    if _original is None:
        _original = asyncio.Handle._run
        asyncio.Handle._run = _timed_run  # type: ignore[method-assign]


def take() -> list[str]:
    """The blocked callbacks seen since the last call."""
    found = list(_found)
    _found.clear()
    return found


def describe(found: list[str]) -> str:
    return "; ".join(found)
