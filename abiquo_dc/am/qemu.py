"""qemu-img, run as an asyncio subprocess: what a disk file really is, and making one.

The format a template's disk has is the one `qemu-img info` finds, never the one its
envelope or its uploader declares: a disk declared as qcow2 that is really raw would be
handed to a hypervisor as qcow2. A disk that reaches outside itself (a backing file, a
qcow2 external data file, a VMDK extent elsewhere) is refused: deployed, it would read
whatever file it names on the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

from abiquo_dc.am.errors import BadPackage, ToolFailed, UnsafeDisk

QEMU_IMG = "qemu-img"
# A crafted image can make qemu-img work for long; a real one answers in milliseconds.
INFO_TIMEOUT = 60.0


async def _run(argv: list[str], timeout: float) -> tuple[int, bytes, bytes]:
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except FileNotFoundError:
        raise ToolFailed(f"{argv[0]} is not installed (apt-get install qemu-utils)") from None
    try:
        async with asyncio.timeout(timeout):
            out, err = await process.communicate()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, out, err


async def image_info(path: Path, *, qemu_img: str = QEMU_IMG) -> dict[str, Any]:
    """`qemu-img info --output=json` of `path`; BadPackage when qemu-img
    cannot read it as any disk image."""
    # -U: a disk being read by a hypervisor still answers.
    argv = [qemu_img, "info", "-U", "--output=json", str(path)]
    try:
        code, out, err = await _run(argv, INFO_TIMEOUT)
    except TimeoutError:
        raise BadPackage(f"qemu-img took longer than {INFO_TIMEOUT:.0f}s on {path.name}") from None
    if code != 0:
        reason = err.decode(errors="replace").strip().splitlines()
        raise BadPackage(f"{path.name} is not a disk image qemu-img reads: {' '.join(reason)}")
    try:
        info = json.loads(out)
    except ValueError:
        raise ToolFailed(f"qemu-img info gave no JSON for {path.name}") from None
    if not isinstance(info, dict):
        raise ToolFailed(f"qemu-img info gave no JSON object for {path.name}")
    return info


def check_self_contained(info: dict[str, Any], path: Path) -> None:
    """UnsafeDisk when the image named by `info` would read another file than `path`."""
    if info.get("backing-filename") or info.get("full-backing-filename"):
        raise UnsafeDisk(f"{path.name} has a backing file: only self-contained disks are taken")
    specific = info.get("format-specific")
    data = specific.get("data") if isinstance(specific, dict) else None
    if not isinstance(data, dict):
        return
    if data.get("data-file"):
        raise UnsafeDisk(f"{path.name} keeps its data in another file")
    extents = data.get("extents")
    if isinstance(extents, list):
        for extent in extents:
            name = extent.get("filename") if isinstance(extent, dict) else None
            if name is not None and Path(str(name)).name != path.name:
                raise UnsafeDisk(f"{path.name} has an extent in another file")


async def create_image(path: Path, *, fmt: str, size: int, qemu_img: str = QEMU_IMG) -> None:
    """A new empty disk image of `size` bytes in format `fmt` (qemu-img's name)."""
    argv = [qemu_img, "create", "-q", "-f", fmt, str(path), str(size)]
    code, _, err = await _run(argv, INFO_TIMEOUT)
    if code != 0:
        raise ToolFailed(f"qemu-img create failed: {err.decode(errors='replace').strip()}")
