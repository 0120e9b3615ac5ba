"""Checking a template's files before it goes into place, and describing it.

A package (an envelope and its files, downloaded or uploaded into the staging area) is
taken only when every file the envelope references is there, inside the template's
directory, exactly as big as declared and under the limit, matches its manifest digest
when the package has a manifest, and every disk is a self-contained image whose real
format (qemu-img info) is the declared one. What describes the template to central
(`TemplateDefinition`) comes from the envelope and from qemu-img, never from the
uploader's word alone.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from abiquo_dc.am.errors import (
    BadPackage,
    ChecksumMismatch,
    DiskFormatMismatch,
    DiskMissing,
    DiskSizeMismatch,
    TooBig,
)
from abiquo_dc.am.ovf import (
    Envelope,
    OvfDisk,
    OvfFile,
    disk_format_from_qemu,
    render_envelope,
    safe_relative,
)
from abiquo_dc.am.qemu import check_self_contained, image_info
from abiquo_dc.protocol.definitions import DiskFormat
from abiquo_dc.protocol.templates import TemplateDefinition

T = TypeVar("T")
Run = Callable[..., Awaitable[Any]]

# qemu-img cannot tell a preallocated qcow2, VHD or VDI from a sparse one: within these
# families, flat and sparse count as the same format. VMDK's kinds it does tell apart.
_LOOSE_FAMILIES = ("QCOW2", "VHD", "VDI")
_HASH_BLOCK = 1024 * 1024


def same_format(declared: DiskFormat, found: DiskFormat) -> bool:
    if declared == found:
        return True
    family = declared.value.split("_", 1)[0]
    return family in _LOOSE_FAMILIES and found.value.split("_", 1)[0] == family


@dataclass(frozen=True)
class DiskFacts:
    """A disk file as qemu-img and the file system see it."""

    format: DiskFormat
    file_size: int
    virtual_size: int


def _stat_regular(path: Path) -> os.stat_result | None:
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    # lstat: a symbolic link would make the repository serve whatever it points at.
    return st if stat.S_ISREG(st.st_mode) else None


def _digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with path.open("rb") as f:
        while block := f.read(_HASH_BLOCK):
            h.update(block)
    return h.hexdigest()


async def describe_disk(path: Path, *, run: Run) -> DiskFacts:
    """What `path` is, by qemu-img; BadPackage when it is no usable disk image."""
    st = await run(_stat_regular, path)
    if st is None:
        raise DiskMissing(f"the disk file {path.name} is not there")
    info = await image_info(path)
    check_self_contained(info, path)
    found = disk_format_from_qemu(info)
    if found in (DiskFormat.UNKNOWN, DiskFormat.INCOMPATIBLE):
        raise BadPackage(
            f"{path.name} is a {info.get('format', 'unknown')!s} image, which no "
            "hypervisor here takes"
        )
    virtual = info.get("virtual-size")
    if not isinstance(virtual, int) or virtual < 0:
        raise BadPackage(f"qemu-img gives no virtual size for {path.name}")
    return DiskFacts(format=found, file_size=st.st_size, virtual_size=virtual)


async def verify_package(
    *,
    directory: Path,
    envelope: Envelope,
    manifest: Mapping[str, tuple[str, str]] | None,
    envelope_name: str,
    max_file_bytes: int,
    run: Run,
) -> dict[str, DiskFacts]:
    """Check every file of the package in `directory`; the facts of each disk, by file id.

    Raises the BadPackage (or TooBig) that says what is wrong with it.
    """
    files = {f.id: f for f in envelope.files}
    for file in envelope.files:
        if file.path == PurePosixPath(envelope_name):
            raise BadPackage(f"file {file.id!r} would overwrite the envelope")
        path = directory / file.path
        st = await run(_stat_regular, path)
        if st is None:
            raise DiskMissing(f"file {file.href!r} the envelope references is not there")
        if st.st_size > max_file_bytes:
            raise TooBig(
                f"file {file.href!r} is {st.st_size} bytes, over the limit of {max_file_bytes}"
            )
        if file.size is not None and st.st_size != file.size:
            raise DiskSizeMismatch(
                f"file {file.href!r} is {st.st_size} bytes where the envelope says {file.size}"
            )
    if manifest:
        await _check_manifest(directory, manifest, envelope_name, files, run)
    facts: dict[str, DiskFacts] = {}
    for disk in envelope.disks:
        file = files[disk.file_id]
        found = await describe_disk(directory / file.path, run=run)
        if disk.format is not None and not same_format(disk.format, found.format):
            raise DiskFormatMismatch(
                f"disk {disk.disk_id!r} is declared {disk.format.value} but "
                f"{file.href!r} is {found.format.value}"
            )
        facts[file.id] = found
    return facts


async def _check_manifest(
    directory: Path,
    manifest: Mapping[str, tuple[str, str]],
    envelope_name: str,
    files: Mapping[str, OvfFile],
    run: Run,
) -> None:
    by_path = {f.path: f for f in files.values()}
    for href, (algorithm, expected) in manifest.items():
        path = safe_relative(href)
        if path != PurePosixPath(envelope_name) and path not in by_path:
            # Listed but not part of what is kept (another envelope's file): nothing to check.
            continue
        actual = await run(_digest, directory / path, algorithm)
        if actual != expected:
            raise ChecksumMismatch(
                f"{href!r} has {algorithm.upper()} {actual}, the manifest says {expected}"
            )


def definition(
    *,
    ovf_id: str,
    envelope: Envelope,
    disk: OvfDisk,
    facts: DiskFacts,
    disk_path: str,
) -> TemplateDefinition:
    """The template as central learns it: `disk_path` relative to the repository."""
    return TemplateDefinition(
        ovf_id=ovf_id,
        name=envelope.name,
        description=envelope.description,
        disk_format=facts.format,
        disk_path=disk_path,
        disk_file_size=facts.file_size,
        virtual_size=facts.virtual_size,
        cpu=envelope.cpu or 1,
        ram_mb=envelope.ram_mb or 256,
        # A disk that declares less than it holds needs what it holds.
        hd_bytes=max(envelope.hd_bytes or 0, facts.virtual_size),
        icon_url=envelope.icon_url,
        category=envelope.category,
    )


def envelope_for_disk(
    *,
    name: str,
    description: str,
    disk_name: str,
    facts: DiskFacts,
    cpu: int | None,
    ram_mb: int | None,
    hd_bytes: int | None,
    icon_url: str,
    category: str,
) -> bytes:
    """The envelope written beside a disk that came without one (an upload, an instance)."""
    file = OvfFile(id="file1", href=disk_name, path=safe_relative(disk_name), size=facts.file_size)
    disk = OvfDisk(
        disk_id="disk1",
        file_id="file1",
        capacity_bytes=max(hd_bytes or 0, facts.virtual_size),
        format=facts.format,
    )
    return render_envelope(
        name=name,
        description=description,
        files=[file],
        disks=[disk],
        cpu=cpu,
        ram_mb=ram_mb,
        icon_url=icon_url,
        category=category,
    )
