"""The disk formats the BPM makes, how qemu-img makes each, and how a file's real format
is told from what `qemu-img info` and the file's own headers say.

What each target is, written as <template dir>/formats/<FORMAT>/<disk's stem>.<ext>:

| format | qemu-img | options | ext |
|---|---|---|---|
| RAW | raw | | .raw |
| QCOW2_SPARSE | qcow2 | (clusters allocated as written) | .qcow2 |
| QCOW2_FLAT | qcow2 | preallocation=metadata | .qcow2 |
| VMDK_FLAT | vmdk | subformat=monolithicFlat (a descriptor and <stem>-flat.vmdk) | .vmdk |
| VMDK_SPARSE | vmdk | subformat=monolithicSparse | .vmdk |
| VMDK_STREAM_OPTIMIZED | vmdk | subformat=streamOptimized | .vmdk |
| VHD_FLAT | vpc | subformat=fixed, force_size=on | .vhd |
| VHD_SPARSE | vpc | subformat=dynamic, force_size=on | .vhd |
| VDI_FLAT | vdi | static=on | .vdi |
| VDI_SPARSE | vdi | | .vdi |
| VHDX | vhdx | subformat=dynamic | .vhdx |

QCOW2_FLAT is metadata preallocation: every cluster has its place in the file from the
start (the fixed layout a flat image is for) without writing the whole virtual size
through the repository's NFS mount first, as `falloc` or `full` would. VHDs get
`force_size=on`: the virtual size is written exactly, not rounded to a disk geometry,
and qemu marks such a VHD so it reads the exact size back. VHDX is made dynamic (Hyper-V
grows it as written).

qemu-img probes a fixed VHD as raw (its only header is a footer at the end), and says
neither whether a VDI is static nor whether a VHD is fixed: those are read from the
footer and the header here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from abiquo_dc.bpm.errors import BadFormat, UnsafeSource
from abiquo_dc.protocol.definitions import DiskFormat

# How much of a file's start and end `detect` looks at.
SNIFF_BYTES = 512


@dataclass(frozen=True)
class Target:
    format: DiskFormat
    # qemu-img's name for it (-O, -f, -F).
    driver: str
    # -o options.
    options: tuple[str, ...]
    extension: str
    # `qemu-img check` works on it (raw and vpc have no consistency check).
    checkable: bool


TARGETS: dict[DiskFormat, Target] = {
    t.format: t
    for t in (
        Target(DiskFormat.RAW, "raw", (), "raw", False),
        Target(DiskFormat.QCOW2_SPARSE, "qcow2", (), "qcow2", True),
        Target(DiskFormat.QCOW2_FLAT, "qcow2", ("preallocation=metadata",), "qcow2", True),
        Target(DiskFormat.VMDK_FLAT, "vmdk", ("subformat=monolithicFlat",), "vmdk", True),
        Target(DiskFormat.VMDK_SPARSE, "vmdk", ("subformat=monolithicSparse",), "vmdk", True),
        Target(
            DiskFormat.VMDK_STREAM_OPTIMIZED, "vmdk", ("subformat=streamOptimized",), "vmdk", True
        ),
        Target(DiskFormat.VHD_FLAT, "vpc", ("subformat=fixed", "force_size=on"), "vhd", False),
        Target(DiskFormat.VHD_SPARSE, "vpc", ("subformat=dynamic", "force_size=on"), "vhd", False),
        Target(DiskFormat.VDI_FLAT, "vdi", ("static=on",), "vdi", True),
        Target(DiskFormat.VDI_SPARSE, "vdi", (), "vdi", True),
        Target(DiskFormat.VHDX, "vhdx", ("subformat=dynamic",), "vhdx", True),
    )
}

SUPPORTED = frozenset(TARGETS)


def target(fmt: DiskFormat) -> Target:
    found = TARGETS.get(fmt)
    if found is None:
        raise BadFormat(
            f"{fmt.value} is not a format the BPM converts to; it makes "
            + ", ".join(sorted(f.value for f in SUPPORTED))
        )
    return found


def check_declared(fmt: DiskFormat, what: str) -> None:
    """A source or target format a request names must be one the BPM knows."""
    if fmt not in SUPPORTED:
        raise BadFormat(f"{what} format {fmt.value} is not one the BPM knows")


# -- what a file is ------------------------------------------------------------------------

_VMDK_SUBFORMATS = {
    "monolithicFlat": DiskFormat.VMDK_FLAT,
    "twoGbMaxExtentFlat": DiskFormat.VMDK_FLAT,
    "vmfs": DiskFormat.VMDK_FLAT,
    "monolithicSparse": DiskFormat.VMDK_SPARSE,
    "twoGbMaxExtentSparse": DiskFormat.VMDK_SPARSE,
    "streamOptimized": DiskFormat.VMDK_STREAM_OPTIMIZED,
}
_VHD_FIXED, _VHD_DYNAMIC = 2, 3
_VDI_SIGNATURE = 0xBEDA107F
_VDI_DYNAMIC, _VDI_STATIC = 1, 2


@dataclass(frozen=True)
class Detected:
    # What to tell qemu-img the file is (-f): never left to its probing.
    driver: str
    # The DiskFormats the file answers to (flat and sparse qcow2 cannot be told apart).
    formats: frozenset[DiskFormat]
    # For messages: "vmdk (streamOptimized)".
    label: str


def detect(info: Mapping[str, Any], head: bytes, tail: bytes) -> Detected:
    """What a file is, from `qemu-img info --output=json` (probed) and its first and last
    SNIFF_BYTES. Raises BadFormat for what the BPM does not convert."""
    driver = str(info.get("format", ""))
    if driver == "raw":
        if _vhd_footer_type(tail) == _VHD_FIXED:
            return Detected("vpc", frozenset({DiskFormat.VHD_FLAT}), "vpc (fixed)")
        return Detected("raw", frozenset({DiskFormat.RAW}), "raw")
    if driver == "qcow2":
        return Detected(
            "qcow2", frozenset({DiskFormat.QCOW2_FLAT, DiskFormat.QCOW2_SPARSE}), "qcow2"
        )
    if driver == "vmdk":
        create_type = str(_specific(info).get("create-type", ""))
        found = _VMDK_SUBFORMATS.get(create_type)
        if found is None:
            raise BadFormat(f"a vmdk of subformat {create_type or '(none)'} is not converted")
        return Detected("vmdk", frozenset({found}), f"vmdk ({create_type})")
    if driver == "vpc":
        kind = _vhd_footer_type(head)
        if kind is None:
            kind = _vhd_footer_type(tail)
        if kind == _VHD_DYNAMIC:
            return Detected("vpc", frozenset({DiskFormat.VHD_SPARSE}), "vpc (dynamic)")
        if kind == _VHD_FIXED:
            return Detected("vpc", frozenset({DiskFormat.VHD_FLAT}), "vpc (fixed)")
        raise BadFormat(f"a VHD of disk type {kind} (differencing or unknown) is not converted")
    if driver == "vhdx":
        return Detected("vhdx", frozenset({DiskFormat.VHDX}), "vhdx")
    if driver == "vdi":
        kind = _vdi_type(head)
        if kind == _VDI_DYNAMIC:
            return Detected("vdi", frozenset({DiskFormat.VDI_SPARSE}), "vdi (dynamic)")
        if kind == _VDI_STATIC:
            return Detected("vdi", frozenset({DiskFormat.VDI_FLAT}), "vdi (static)")
        raise BadFormat(f"a VDI of image type {kind} is not converted")
    raise BadFormat(f"a {driver or 'unrecognised'} image is not a format the BPM converts")


def referenced_files(info: Mapping[str, Any]) -> list[str]:
    """Other files qemu-img would read for this image (a VMDK's extents); each must be
    checked to be inside the repository. Raises UnsafeSource for what is never allowed."""
    if info.get("backing-filename") or info.get("full-backing-filename"):
        raise UnsafeSource("it has a backing file: only standalone disks are converted")
    if info.get("encrypted"):
        raise UnsafeSource("it is encrypted")
    specific = _specific(info)
    if specific.get("data-file"):
        raise UnsafeSource("its data is in an external data file")
    extents = specific.get("extents") or []
    return [str(e["filename"]) for e in extents if isinstance(e, dict) and e.get("filename")]


def _specific(info: Mapping[str, Any]) -> Mapping[str, Any]:
    specific = info.get("format-specific") or {}
    data = specific.get("data") if isinstance(specific, dict) else None
    return data if isinstance(data, dict) else {}


def _vhd_footer_type(block: bytes) -> int | None:
    """The disk type of a VHD footer (2 fixed, 3 dynamic, 4 differencing), or None when
    `block` is not one: the cookie and the checksum must both match, so a raw disk whose
    last sector happens to start with "conectix" is not taken for a VHD."""
    if len(block) < 512:
        return None
    footer = block[-512:]
    if footer[:8] != b"conectix":
        return None
    checksum = int.from_bytes(footer[64:68], "big")
    total = sum(footer[:64]) + sum(footer[68:])
    if (~total & 0xFFFFFFFF) != checksum:
        return None
    return int.from_bytes(footer[60:64], "big")


def _vdi_type(head: bytes) -> int | None:
    if len(head) < 0x50 or int.from_bytes(head[0x40:0x44], "little") != _VDI_SIGNATURE:
        return None
    return int.from_bytes(head[0x4C:0x50], "little")
