"""Disk conversions through the BPM, against running the same qemu-img convert directly.

One raw disk (512 MiB by default: every other MiB random data, the rest holes, as a
template with free space has) is converted to a few formats, each through a running
BusinessProcessManager (a ConvertTemplateDisk on its bus, timed from the request to its
DONE notification) and by the same `qemu-img convert` command line run directly, one
after the other, in the same run (the machines are shared and noisy). A second baseline
does directly what the BPM does for each conversion: convert, fsync the result (qemu-img
convert leaves it in the page cache), then `qemu-img check` (where the format has one)
and `qemu-img compare` against the source. The ratios are the BPM's time over each
baseline's: over convert alone, what durability, verification and the BPM cost
together; over the second, what the BPM itself adds (`qemu-img info` on both disks, the
temporary directory and the renames, the journal, the bus).

Each round removes what the previous one made, so the BPM converts every time; the
times printed are the best of the rounds.

    .venv/bin/python bench/bpm.py [--size-mib N] [--rounds R] [--formats F,F,...]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from abiquo_dc.bpm.formats import TARGETS, Target
from abiquo_dc.bpm.service import BusinessProcessManager
from abiquo_dc.bus import Bus
from abiquo_dc.protocol.definitions import DiskFormat
from abiquo_dc.protocol.templates import (
    ConversionState,
    ConversionStateChanged,
    ConvertTemplateDisk,
)
from abiquo_dc.settings import BpmSettings, RepositorySettings
from abiquo_runtime.logs import configure_logging
from abiquo_runtime.settings import LogSettings

MIB = 1024 * 1024
DEFAULT_FORMATS = "QCOW2_SPARSE,VMDK_STREAM_OPTIMIZED,VHD_FLAT,VDI_SPARSE"


def write_disk(path: Path, size_mib: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        f.truncate(size_mib * MIB)
        for mib in range(0, size_mib, 2):
            f.seek(mib * MIB)
            f.write(os.urandom(MIB))


async def run(*command: str) -> None:
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, err = await process.communicate()
    # check answers 63 for formats it cannot check: that is not a failure.
    if process.returncode not in (0, 63) or (process.returncode == 63 and command[1] != "check"):
        raise SystemExit(f"{' '.join(command)}: {err.decode().strip()}")


def convert_command(qemu_img: str, source: Path, target: Target, out: Path) -> list[str]:
    command = [qemu_img, "convert", "-f", "raw", "-O", target.driver]
    if target.options:
        command += ["-o", ",".join(target.options)]
    return [*command, str(source), str(out)]


def sync(directory: Path) -> None:
    for entry in directory.iterdir():
        fd = os.open(entry, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


async def direct(qemu_img: str, source: Path, target: Target, out: Path, verify: bool) -> float:
    started = time.perf_counter()
    await run(*convert_command(qemu_img, source, target, out))
    if verify:
        await asyncio.to_thread(sync, out.parent)
        if target.checkable:
            await run(qemu_img, "check", "-f", target.driver, str(out))
        await run(qemu_img, "compare", "-f", "raw", "-F", target.driver, str(source), str(out))
    return time.perf_counter() - started


class Bpm:
    def __init__(self, root: Path, state: Path, qemu_img: str) -> None:
        self.bus = Bus(name="bench.bus")
        self.ended: dict[str, asyncio.Future[ConversionStateChanged]] = {}
        self.bpm = BusinessProcessManager(
            bus=self.bus,
            dc_uuid="bench",
            repository=RepositorySettings(path=str(root)),
            settings=BpmSettings(qemu_img=qemu_img),
            state_dir=state,
        )

    async def start(self) -> None:
        self.bus.subscribe(ConversionStateChanged, self._note)
        await self.bpm.start()
        await self.bpm.wait_running(10.0)

    async def _note(self, note: ConversionStateChanged) -> None:
        final = (ConversionState.DONE, ConversionState.FAILED, ConversionState.CANCELLED)
        waiting = self.ended.get(note.conversion_id)
        if note.state in final and waiting is not None and not waiting.done():
            waiting.set_result(note)

    async def convert(self, conversion_id: str, source: str, fmt: DiskFormat) -> float:
        self.ended[conversion_id] = asyncio.get_running_loop().create_future()
        started = time.perf_counter()
        await self.bus.request(
            ConvertTemplateDisk(
                conversion_id=conversion_id,
                source_path=source,
                source_format=DiskFormat.RAW,
                target_format=fmt,
            ),
            timeout=60,
        )
        note = await self.ended[conversion_id]
        elapsed = time.perf_counter() - started
        if note.state is not ConversionState.DONE:
            raise SystemExit(f"{fmt.value}: {note.state.value} {note.error}")
        return elapsed

    async def stop(self) -> None:
        await self.bpm.stop()
        await self.bus.close()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--formats", default=DEFAULT_FORMATS)
    args = parser.parse_args()
    configure_logging(LogSettings(level="warning"), program="bench-bpm")
    qemu_img = shutil.which("qemu-img")
    if qemu_img is None:
        raise SystemExit("qemu-img is not installed (apt-get install qemu-utils)")
    formats = [DiskFormat(name.strip()) for name in args.formats.split(",")]

    work = Path(tempfile.mkdtemp(prefix="bench-bpm-"))
    try:
        root = work / "repository"
        root.mkdir()
        (root / RepositorySettings().mark_file).touch()
        source_rel = "1/template/disk.raw"
        source = root / source_rel
        await asyncio.to_thread(write_disk, source, args.size_mib)
        bpm = Bpm(root, work / "state", qemu_img)
        await bpm.start()
        best: dict[tuple[DiskFormat, str], float] = {}

        def keep(fmt: DiskFormat, what: str, seconds: float) -> None:
            best[(fmt, what)] = min(seconds, best.get((fmt, what), seconds))

        try:
            for round_ in range(args.rounds):
                for fmt in formats:
                    target = TARGETS[fmt]
                    out = work / "direct" / f"disk.{target.extension}"
                    out.parent.mkdir(exist_ok=True)
                    keep(fmt, "convert", await direct(qemu_img, source, target, out, False))
                    await asyncio.to_thread(shutil.rmtree, out.parent)
                    out.parent.mkdir()
                    keep(fmt, "verified", await direct(qemu_img, source, target, out, True))
                    await asyncio.to_thread(shutil.rmtree, out.parent)
                    keep(fmt, "bpm", await bpm.convert(f"r{round_}-{fmt.value}", source_rel, fmt))
                    await asyncio.to_thread(shutil.rmtree, source.parent / "formats")
        finally:
            await bpm.stop()
    finally:
        await asyncio.to_thread(shutil.rmtree, work, True)

    data = args.size_mib // 2
    print(
        f"{args.size_mib} MiB raw disk ({data} MiB of data), best of {args.rounds} rounds, seconds"
    )
    print(
        f"{'format':<24}{'convert':>10}{'+sync+verify':>14}{'BPM':>10}"
        f"{'BPM/convert':>14}{'BPM/+sync+verify':>18}"
    )
    for fmt in formats:
        alone, verified, through = (best[(fmt, w)] for w in ("convert", "verified", "bpm"))
        print(
            f"{fmt.value:<24}{alone:>10.2f}{verified:>14.2f}{through:>10.2f}"
            f"{through / alone:>14.2f}{through / verified:>18.2f}"
        )


if __name__ == "__main__":
    asyncio.run(main())
