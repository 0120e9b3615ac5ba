"""What a disk in the repository is, and whether its conversion is there already.

`Images.source` is everything a request's disk must pass before it is queued (and again
before it is converted): its path stays inside the repository, qemu-img can read it, its
real format is one the BPM converts and the one the request declares, and qemu-img
would read nothing outside the repository for it (no backing file, no extent elsewhere).
`Images.plan` adds where its conversion goes, and whether there is anything to do.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from abiquo_dc.bpm import formats
from abiquo_dc.bpm.conversions import Done
from abiquo_dc.bpm.errors import FormatMismatch, Unreadable, UnsafeSource
from abiquo_dc.bpm.formats import Detected, Target, detect, referenced_files
from abiquo_dc.bpm.qemu import QemuImg
from abiquo_dc.bpm.repository import Placement, Repository, SourceFile
from abiquo_dc.protocol.definitions import DiskFormat
from abiquo_runtime.errors import AbiquoError

# Runs a blocking function in the BPM's file system threads.
Blocking = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class Image:
    detected: Detected
    virtual_size: int


@dataclass(frozen=True)
class Source:
    file: SourceFile
    image: Image

    @property
    def path(self) -> Path:
        return self.file.path

    @property
    def driver(self) -> str:
        return self.image.detected.driver

    def is_in(self, fmt: DiskFormat) -> bool:
        return fmt in self.image.detected.formats


@dataclass(frozen=True)
class Plan:
    source: Source
    target: Target
    # None when the disk is in the target format already.
    placement: Placement | None
    # Set when there is nothing to do: the disk is in that format, or was converted.
    done: Done | None


class Images:
    def __init__(self, *, repository: Repository, qemu: QemuImg, blocking: Blocking) -> None:
        self.repository = repository
        self.qemu = qemu
        self._blocking = blocking

    async def source(self, rel: str, declared: DiskFormat) -> Source:
        file: SourceFile = await self._blocking(self.repository.open_source, rel)
        info = await self.qemu.info(file.path)
        for extent in referenced_files(info):
            inside = await self._blocking(self.repository.inside, extent, base=file.path.parent)
            if not inside:
                raise UnsafeSource(f"{rel} names a file outside the repository: {extent}")
        image = await self._image(file.path, info, file.head, file.tail)
        if declared not in image.detected.formats:
            raise FormatMismatch(
                f"{rel} is declared {declared.value} but is a {image.detected.label} disk "
                f"({' or '.join(sorted(f.value for f in image.detected.formats))})"
            )
        return Source(file=file, image=image)

    async def plan(
        self, source_path: str, source_format: DiskFormat, target_format: DiskFormat
    ) -> Plan:
        """What converting the disk at `source_path` to `target_format` takes; raises
        the taxonomy's errors for a request that cannot be done."""
        formats.check_declared(source_format, "the source's")
        target = formats.target(target_format)
        source = await self.source(source_path, source_format)
        if source_format == target_format:
            # Already so (the declared format was just checked against the disk).
            return Plan(source, target, None, Done(source.file.rel, target_format))
        placement: Placement = await self._blocking(self.repository.placement, source.file, target)
        if await self.done_before(source, target, placement):
            return Plan(source, target, placement, Done(placement.rel, target_format))
        return Plan(source, target, placement, None)

    async def made(self, path: Path, target: Target) -> Image:
        """A disk the BPM wrote as `target`, read as that format (never probed)."""
        info = await self.qemu.info(path, driver=target.driver)
        head, tail = await self._blocking(Repository.read_edges, path)
        return await self._image(path, info, head, tail)

    async def done_before(self, source: Source, target: Target, placement: Placement) -> bool:
        """Whether the conversion is there already: at its final name (so it was verified
        when it was made), made after the source last changed, of the right format and
        exact size."""
        modified = await self._blocking(Repository.modified, placement.path)
        if modified is None or modified < source.file.mtime:
            return False
        try:
            image = await self.made(placement.path, target)
        except AbiquoError:
            return False
        return target.format in image.detected.formats and (
            image.virtual_size == source.image.virtual_size
        )

    async def _image(self, path: Path, info: dict[str, Any], head: bytes, tail: bytes) -> Image:
        detected = detect(info, head, tail)
        if detected.driver != info.get("format"):
            # Probed as something else (a fixed VHD reads as raw): its size as what it is.
            info = await self.qemu.info(path, driver=detected.driver)
        try:
            size = int(info["virtual-size"])
        except (KeyError, TypeError, ValueError):
            raise Unreadable(f"qemu-img info gives no virtual size for {path.name}") from None
        return Image(detected=detected, virtual_size=size)
