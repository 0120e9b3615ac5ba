"""One conversion, start to finish: qemu-img convert into a temporary directory beside the
final name, the files synced, checked (`qemu-img check` where the format has one),
compared with the source (`qemu-img compare`) and measured (the exact virtual size), and
only then renamed into place. On any failure, a cancellation or a stop, the temporary
directory goes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from abiquo_dc.bpm.errors import VerificationFailed
from abiquo_dc.bpm.formats import Target
from abiquo_dc.bpm.images import Blocking, Images, Source
from abiquo_dc.bpm.qemu import Cancellation
from abiquo_dc.bpm.repository import Placement, Repository

Progress = Callable[[float], Awaitable[None]]

# The share of the progress bar that converting takes; comparing takes the rest (it
# reads both disks whole, about what converting costs).
CONVERT_SHARE = 60.0


async def convert(
    images: Images,
    blocking: Blocking,
    source: Source,
    target: Target,
    placement: Placement,
    *,
    progress: Progress,
    cancellation: Cancellation,
) -> None:
    qemu = images.qemu
    temporary: Path = await blocking(Repository.make_temporary, placement)
    try:
        made = temporary / placement.path.name

        async def converting(percent: float) -> None:
            await progress(percent * CONVERT_SHARE / 100.0)

        async def comparing(percent: float) -> None:
            await progress(CONVERT_SHARE + percent * (100.0 - CONVERT_SHARE) / 100.0)

        await qemu.convert(
            source.path,
            source.driver,
            made,
            target,
            progress=converting,
            cancellation=cancellation,
        )
        await blocking(Repository.sync, temporary)
        if target.checkable:
            await qemu.check(made, target.driver, cancellation=cancellation)
        await qemu.compare(
            source.path,
            source.driver,
            made,
            target.driver,
            progress=comparing,
            cancellation=cancellation,
        )
        image = await images.made(made, target)
        if target.format not in image.detected.formats:
            raise VerificationFailed(
                f"qemu-img made a {image.detected.label} disk, not {target.format.value}"
            )
        if image.virtual_size != source.image.virtual_size:
            raise VerificationFailed(
                f"the converted disk is {image.virtual_size} bytes, its source "
                f"{source.image.virtual_size}: sizes must be exact"
            )
        cancellation.check()
        await blocking(Repository.commit, temporary, placement)
    finally:
        # Shielded: a stop arriving now must not leave the directory half removed.
        await asyncio.shield(blocking(Repository.remove, temporary))
