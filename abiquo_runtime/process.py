"""Running one program as a service: uvloop, signals, readiness, the staged shutdown.

A program is anything with `start()` and `shutdown_stages()`. run_service starts it,
tells systemd READY=1, waits for SIGTERM or SIGINT, tells systemd STOPPING=1, runs the
stages, and returns the exit status: 0 after a requested stop, 1 when start failed.
"""

from __future__ import annotations

import asyncio
import gc
import signal
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Protocol

import structlog
import uvloop

from abiquo_runtime.sdnotify import notify
from abiquo_runtime.shutdown import Stage, run_stages


class Service(Protocol):
    async def start(self) -> None: ...

    def shutdown_stages(self) -> Sequence[Stage]: ...


async def serve(
    service: Service,
    *,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[], Awaitable[None]] | None = None,
) -> int:
    """Start `service`, wait for a stop signal or `stop`, then shut it down in stages."""
    log = structlog.get_logger("abiquo.process")
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        try:
            await service.start()
        except Exception:
            log.exception("start failed")
            await run_stages(service.shutdown_stages())
            return 1
        # What start-up built lives as long as the process: out of the collector's sight,
        # a full collection walks only what came since, and never stalls the loop long.
        gc.freeze()
        notify("READY=1")
        log.info("ready")
        if on_ready is not None:
            await on_ready()
        await stop.wait()
        log.info("stopping")
        notify("STOPPING=1")
        await run_stages(service.shutdown_stages())
        log.info("stopped")
        return 0
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


def run_service(build: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run the coroutine `build()` (which calls `serve`) on uvloop; return its exit status."""
    return uvloop.run(build())
