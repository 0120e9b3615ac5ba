"""A BPM over a repository in a temporary directory, its notifications collected, and the
disks it converts: small images with data at known offsets, made with the real qemu-img.

The tests need qemu-img (Debian's qemu-utils): without it they are skipped, and with
CI=true they fail saying how to get it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

from abiquo_dc.bpm.service import BusinessProcessManager
from abiquo_dc.bus import Bus
from abiquo_dc.protocol.definitions import DiskFormat
from abiquo_dc.protocol.templates import (
    ConversionState,
    ConversionStateChanged,
    ConvertTemplateDisk,
)
from abiquo_dc.settings import BpmSettings, RepositorySettings
from tests import services

MIB = 1024 * 1024
# Every test disk is this big: a whole number of MiB, which every format keeps exactly.
SIZE = 4 * MIB
# (offset, byte, length): what a test disk holds; the rest reads as zeros.
DATA = [
    (0, 0xAB, 64 * 1024),
    (MIB + 4096, 0x5C, 100 * 1024),
    (3 * MIB - 512, 0x11, 4096),
    (SIZE - 4096, 0xEE, 4096),
]
MARK = ".abiquo_repository"

# How the tests make each format themselves, independently of the BPM's own table.
MADE_WITH: dict[DiskFormat, tuple[str, str, str]] = {
    DiskFormat.RAW: ("raw", "", "raw"),
    DiskFormat.QCOW2_SPARSE: ("qcow2", "", "qcow2"),
    DiskFormat.QCOW2_FLAT: ("qcow2", "preallocation=metadata", "qcow2"),
    DiskFormat.VMDK_FLAT: ("vmdk", "subformat=monolithicFlat", "vmdk"),
    DiskFormat.VMDK_SPARSE: ("vmdk", "subformat=monolithicSparse", "vmdk"),
    DiskFormat.VMDK_STREAM_OPTIMIZED: ("vmdk", "subformat=streamOptimized", "vmdk"),
    DiskFormat.VHD_FLAT: ("vpc", "subformat=fixed,force_size=on", "vhd"),
    DiskFormat.VHD_SPARSE: ("vpc", "subformat=dynamic,force_size=on", "vhd"),
    DiskFormat.VDI_FLAT: ("vdi", "static=on", "vdi"),
    DiskFormat.VDI_SPARSE: ("vdi", "", "vdi"),
    DiskFormat.VHDX: ("vhdx", "subformat=dynamic", "vhdx"),
}
FORMATS = list(MADE_WITH)
FINAL = {ConversionState.DONE, ConversionState.FAILED, ConversionState.CANCELLED}


def qemu_img() -> str:
    """qemu-img's path; skips (fails with CI=true) the test when it is not installed."""
    return services.require_tool("qemu-img", "qemu-utils")


def driver(fmt: DiskFormat) -> str:
    return MADE_WITH[fmt][0]


# -- disks (synchronous: for fixtures, or through asyncio.to_thread) -------------------------


def repository(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / MARK).touch()
    return root


def write_raw(path: Path, size: int = SIZE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        f.truncate(size)
        for offset, byte, length in DATA:
            f.seek(offset)
            f.write(bytes([byte]) * length)
    return path


def write_random(path: Path, size: int) -> Path:
    """Data throughout: every byte must be read, converted and written (slow to convert)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        for _ in range(size // MIB):
            f.write(os.urandom(MIB))
    return path


def make(raw: Path, fmt: DiskFormat, path: Path) -> Path:
    """`raw` made into `fmt` at `path` with qemu-img convert."""
    drv, options, _ = MADE_WITH[fmt]
    path.parent.mkdir(parents=True, exist_ok=True)
    command = [qemu_img(), "convert", "-f", "raw", "-O", drv]
    if options:
        command += ["-o", options]
    subprocess.run([*command, str(raw), str(path)], check=True, capture_output=True)
    return path


def disk_name(fmt: DiskFormat, stem: str = "disk") -> str:
    return f"{stem}.{MADE_WITH[fmt][2]}"


def slow_qemu_img(directory: Path, rate: str = "4M") -> tuple[Path, Path]:
    """A qemu-img whose conversions are throttled to `rate` bytes a second, and the file
    where each run writes its command and pid (it execs qemu-img: that is qemu-img's)."""
    pids = directory / "qemu-img.pids"
    script = directory / "slow-qemu-img"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$1 $$" >> "{pids}"\n'
        'if [ "$1" = convert ]; then\n'
        "  shift\n"
        f'  exec "{qemu_img()}" convert -m 1 -r {rate} "$@"\n'
        "fi\n"
        f'exec "{qemu_img()}" "$@"\n'
    )
    script.chmod(0o755)
    return script, pids


def pids_in(path: Path, command: str = "convert") -> list[int]:
    """The pids of the runs of `command` through slow_qemu_img, in order."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    return [int(pid) for name, pid in (line.split() for line in lines) if name == command]


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead but not reaped, counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return status.rsplit(")", 1)[1].split()[0] != "Z"


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def temporaries(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.name.startswith(".bpm-tmp-"))


async def compare(first: Path, first_fmt: DiskFormat, second: Path, second_fmt: DiskFormat) -> str:
    """qemu-img compare's verdict, run by the test itself."""
    process = await asyncio.create_subprocess_exec(
        qemu_img(),
        "compare",
        "-f",
        driver(first_fmt),
        "-F",
        driver(second_fmt),
        str(first),
        str(second),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    return out.decode().strip()


async def virtual_size(path: Path, fmt: DiskFormat) -> int:
    process = await asyncio.create_subprocess_exec(
        qemu_img(),
        "info",
        "-f",
        driver(fmt),
        "--output=json",
        str(path),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await process.communicate()
    return int(json.loads(out)["virtual-size"])


async def until(ready: Callable[[], object], timeout: float = 30.0, what: str = "") -> None:
    """Wait until `ready()` is true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or ready}")
        await asyncio.sleep(0.01)


# -- a running BPM -----------------------------------------------------------------------------


@dataclass
class Harness:
    bpm: BusinessProcessManager
    bus: Bus
    root: Path
    notes: list[ConversionStateChanged] = field(default_factory=list)

    async def ask(
        self,
        conversion_id: str,
        source: str,
        source_format: DiskFormat,
        target_format: DiskFormat,
    ) -> None:
        """Send ConvertTemplateDisk as the link does, and return when it is accepted."""
        await self.bus.request(
            ConvertTemplateDisk(
                conversion_id=conversion_id,
                source_path=source,
                source_format=source_format,
                target_format=target_format,
            ),
            timeout=30,
        )

    def of(self, conversion_id: str) -> list[ConversionStateChanged]:
        return [n for n in self.notes if n.conversion_id == conversion_id]

    def states(self, conversion_id: str) -> list[str]:
        return [n.state.value for n in self.of(conversion_id)]

    async def until(
        self, ready: Callable[[], object], timeout: float = 30.0, what: str = "a condition"
    ) -> None:
        try:
            await until(ready, timeout, what)
        except AssertionError as exc:
            notes = ", ".join(f"{n.conversion_id}:{n.state.value}" for n in self.notes)
            raise AssertionError(f"{exc}; notifications: {notes}") from None

    async def ended(self, conversion_id: str, timeout: float = 30.0) -> ConversionStateChanged:
        """The final notification of a conversion, once it comes."""
        await self.until(
            lambda: any(n.state in FINAL for n in self.of(conversion_id)),
            timeout,
            f"{conversion_id} to end",
        )
        return next(n for n in self.of(conversion_id) if n.state in FINAL)

    async def reached(
        self, conversion_id: str, state: ConversionState, timeout: float = 30.0
    ) -> None:
        await self.until(
            lambda: any(n.state is state for n in self.of(conversion_id)),
            timeout,
            f"{conversion_id} to reach {state.value}",
        )


@contextlib.asynccontextmanager
async def running_bpm(
    root: Path,
    *,
    state_dir: Path | None = None,
    executable: str | None = None,
    timeout: float = 600.0,
    progress_interval: float = 0.1,
    bus: Bus | None = None,
) -> AsyncIterator[Harness]:
    """A running BPM over the repository at `root` (on `bus`, or a bus of its own which
    it closes); stopped on the way out."""
    own_bus = bus is None
    bus = bus or Bus(name="test.bus")
    harness_notes: list[ConversionStateChanged] = []

    async def collect(note: ConversionStateChanged) -> None:
        harness_notes.append(note)

    bus.subscribe(ConversionStateChanged, collect)
    bpm = BusinessProcessManager(
        bus=bus,
        dc_uuid="dc-test",
        repository=RepositorySettings(path=str(root), mark_file=MARK),
        settings=BpmSettings(qemu_img=executable or qemu_img(), conversion_timeout=timeout),
        state_dir=state_dir,
    )
    bpm.progress_interval = progress_interval
    bpm.not_mounted_hold = 0.0
    await bpm.start()
    try:
        await bpm.wait_running(10.0)
        yield Harness(bpm, bus, root, harness_notes)
    finally:
        await bpm.stop()
        if own_bus:
            await bus.drain(2.0)
            await bus.close()
