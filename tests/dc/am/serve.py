"""An Appliance Manager alone in a process of its own, for tests and the benchmark that
measure what it costs: its memory, and its loop's longest stall.

    python -m tests.dc.am.serve <repository dir> [--max-upload BYTES]

Prints `port <n>` once it listens. Each line read from stdin is a command: `rss`
answers `rss <VmRSS kB> <VmHWM kB>` (now, and the peak since start); `quit` (or the end
of stdin) stops it, and it prints `blocked <JSON list>`: the loop callbacks that ran
longer than 100 ms, as the tests' loop guard sees them.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
from pathlib import Path

from aiohttp import web

from abiquo_dc.am.service import ApplianceManager
from abiquo_dc.am.status import MemoryStatusStore
from abiquo_dc.bus import Bus
from abiquo_dc.settings import AmSettings, RepositorySettings
from tests import loopguard


def memory() -> tuple[int, int]:
    """This process's resident set now and at its peak, in kB."""
    found = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0])
    return found["VmRSS"], found["VmHWM"]


async def main(repository: str, max_upload: int) -> None:
    bus = Bus(name="am.bus")
    service = ApplianceManager(
        bus=bus,
        dc_uuid="dc-serve",
        repository=RepositorySettings(path=repository),
        settings=AmSettings(max_upload_bytes=max_upload),
        store=MemoryStatusStore,
    )
    await service.start()
    await service.wait_running(10)
    app = web.Application()
    app.add_routes(service.all_routes())
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    # As the programs do once started: what exists now is left out of the collector's
    # walks, so that a collection does not read as a stalled loop.
    gc.freeze()
    loopguard.install()
    print(f"port {port}", flush=True)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        command = line.strip()
        if command == "rss":
            rss, peak = memory()
            print(f"rss {rss} {peak}", flush=True)
        elif command in ("quit", ""):
            break
    await runner.cleanup()
    await service.stop()
    await bus.close()
    print(f"blocked {json.dumps(loopguard.take())}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("repository")
    parser.add_argument("--max-upload", type=int, default=64 * 1024**3)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.repository, arguments.max_upload))
