"""A BPM in a process of its own, for test_crash to kill with SIGKILL mid-conversion.

    python -m tests.dc.bpm.crash_child ROOT STATE_DIR QEMU_IMG [ID SOURCE TARGET_FORMAT]

Starts a BPM with its journal in STATE_DIR over the repository at ROOT, hands it the
conversion request if one is given (the source is RAW), prints "ready" once the request
is journaled, then runs until it is killed.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from abiquo_dc.bpm.service import BusinessProcessManager
from abiquo_dc.bus import Bus
from abiquo_dc.protocol.definitions import DiskFormat
from abiquo_dc.protocol.templates import ConvertTemplateDisk
from abiquo_dc.settings import BpmSettings, RepositorySettings
from abiquo_runtime.logs import configure_logging
from abiquo_runtime.settings import LogSettings
from tests.dc.bpm.harness import MARK


async def main(root: str, state_dir: str, qemu_img: str, *request: str) -> None:
    # Logs on stderr: stdout says "ready" and nothing else.
    configure_logging(LogSettings(level="info", format="json"), program="bpm-child")
    bus = Bus(name="child.bus")
    bpm = BusinessProcessManager(
        bus=bus,
        dc_uuid="dc-test",
        repository=RepositorySettings(path=root, mark_file=MARK),
        settings=BpmSettings(qemu_img=qemu_img),
        state_dir=Path(state_dir),
    )
    await bpm.start()
    await bpm.wait_running(10.0)
    if request:
        conversion_id, source, target = request
        await bus.request(
            ConvertTemplateDisk(
                conversion_id=conversion_id,
                source_path=source,
                source_format=DiskFormat.RAW,
                target_format=DiskFormat(target),
            ),
            timeout=30,
        )
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
