"""OVF packages: the envelope (DMTF DSP0243 1.x, 2.x read too), its manifest, disk formats.

An OVF package is a directory (or a remote one) holding the envelope (`*.ovf`), the files
its References section lists, and optionally a manifest (`*.mf`) of their digests. What
the repository needs of it:

- References/File (ovf:id, ovf:href, ovf:size): the files to fetch. Every href must stay
  inside the template's directory (`safe_relative`); absolute URLs are refused as well,
  so a package is always downloaded from, and stored under, one place.
- DiskSection/Disk (ovf:diskId, ovf:fileRef, ovf:capacity, ovf:capacityAllocationUnits,
  ovf:format): the disks, each backed by one of those files (blank disks are refused: a
  template is its disk).
- The one VirtualSystem: its VirtualHardwareSection's Items (ResourceType 3 = CPUs in
  VirtualQuantity, 4 = memory in AllocationUnits, 17 = a disk drive whose HostResource
  `ovf:/disk/<diskId>` names the template's hard disk), its ProductSection (Product is
  the name, Info the description, the first Icon's ovf:fileRef the icon, and the
  unqualified `CategoryName` attribute Abiquo writes is the category) and its
  AnnotationSection (a better description than the ProductSection's Info when there).

The envelope is parsed with defusedxml with DTDs forbidden: no entity, internal or
external, is ever expanded. Every way a document can be wrong comes out as an `OvfError`
whose message says what and where; nothing else escapes `parse_envelope`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit
from xml.etree.ElementTree import Element, ParseError
from xml.sax.saxutils import escape, quoteattr

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from abiquo_dc.protocol.definitions import DiskFormat
from abiquo_runtime.errors import InvalidInput

OVF_NS = "http://schemas.dmtf.org/ovf/envelope/1"
OVF2_NS = "http://schemas.dmtf.org/ovf/envelope/2"
RASD_NS = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
VSSD_NS = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"

# Anything larger is a typo or an attack, not a disk: 64 TiB.
MAX_DISK_BYTES = 64 * 1024**4
MAX_CPU = 4096
MAX_RAM_MB = 16 * 1024**2  # 16 TiB
MAX_HREF_CHARS = 1024
MAX_SEGMENT_BYTES = 255  # NAME_MAX of the filesystems the repository lives on
MAX_MANIFEST_CHARS = 1024**2

# CIM resource types (DSP1041) the repository reads.
_CPU, _MEMORY, _DISK_DRIVE = 3, 4, 17


class OvfError(InvalidInput):
    """An OVF envelope, manifest or href the repository cannot take as it is."""

    code = "AM-OVF"


@dataclass(frozen=True)
class OvfFile:
    """One References/File."""

    id: str
    href: str  # as written in the envelope
    path: PurePosixPath  # safe, relative to the template's directory, normalised
    size: int | None  # bytes, when the envelope says

    @classmethod
    def from_href(cls, id: str, href: str, size: int | None = None) -> OvfFile:
        """A file entry whose path is `href` checked by `safe_relative` (OvfError if not safe)."""
        return cls(id=id, href=href, path=safe_relative(href), size=size)


@dataclass(frozen=True)
class OvfDisk:
    """One DiskSection/Disk."""

    disk_id: str
    file_id: str
    capacity_bytes: int | None  # the virtual size; None when the envelope does not say
    # As declared by ovf:format; None when absent or not a format this platform knows.
    # What the file really is comes from qemu-img (disk_format_from_qemu).
    format: DiskFormat | None


@dataclass(frozen=True)
class Envelope:
    """What the repository takes from an OVF envelope."""

    name: str
    description: str
    files: tuple[OvfFile, ...]
    disks: tuple[OvfDisk, ...]
    cpu: int | None
    ram_mb: int | None
    # The capacity of the template's hard disk: the one the first disk drive Item points
    # at, else the first disk's.
    hd_bytes: int | None
    # An http(s) URL, or the href of a file of the package (made absolute when
    # parse_envelope is given the envelope's URL); "" for none.
    icon_url: str
    category: str

    def disk_file(self, disk: OvfDisk) -> OvfFile:
        """The file a disk is read from."""
        for file in self.files:
            if file.id == disk.file_id:
                return file
        raise OvfError(
            f"disk {_show(disk.disk_id)} refers to file {_show(disk.file_id)}, "
            "which References does not list"
        )


def _show(value: str, limit: int = 80) -> str:
    """A value quoted for a message, cut short: documents are untrusted and may be huge."""
    if len(value) > limit:
        return repr(value[:limit]) + "..."
    return repr(value)


# -- hrefs ----------------------------------------------------------------------------

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")
_DRIVE = re.compile(r"^[A-Za-z]:")


def _href_problem(text: str) -> str | None:
    if not text:
        return "is empty"
    if "\x00" in text:
        return "contains a NUL character"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        return "contains a control character"
    if text != text.strip():
        return "has leading or trailing spaces"
    if "\\" in text:
        return "contains a backslash"
    if _DRIVE.match(text):
        return "starts with a drive letter"
    if _SCHEME.match(text):
        return "is a URL with a scheme, not a path inside the package"
    if text.startswith("/"):
        return "is an absolute path"
    if ".." in text:
        return "contains '..'"
    if "?" in text or "#" in text:
        return "has a query or fragment"
    return None


def safe_relative(href: str) -> PurePosixPath:
    """The path a package's href names inside the template's directory, normalised.

    Refused (OvfError): empty, NUL or control characters, surrounding spaces, backslashes,
    drive letters, URLs with a scheme, absolute paths, '..' anywhere, queries and
    fragments, a directory (trailing '/'), and over-long names. An href is a URI
    reference, so the same checks run on its percent-decoded form too: `%2e%2e` is as
    refused as `..`.
    """
    if not isinstance(href, str):
        raise OvfError("a file reference must be text")
    if len(href) > MAX_HREF_CHARS:
        raise OvfError(f"file reference {_show(href)} is longer than {MAX_HREF_CHARS} chars")
    problem = _href_problem(href)
    if problem is None and "%" in href:
        # The decoded form is what a web server serving the package would look up.
        try:
            decoded = unquote(href, errors="strict")
        except UnicodeDecodeError:
            problem = "has percent-escapes that are not UTF-8"
        else:
            problem = _href_problem(decoded)
            if problem is not None:
                problem = f"once percent-decoded, {problem}"
    if problem is not None:
        raise OvfError(f"file reference {_show(href)} {problem}")
    if href.endswith("/"):
        raise OvfError(f"file reference {_show(href)} names a directory, not a file")
    parts = [p for p in href.split("/") if p not in ("", ".")]
    if not parts:
        raise OvfError(f"file reference {_show(href)} names no file")
    for part in parts:
        if len(part.encode("utf-8", "surrogatepass")) > MAX_SEGMENT_BYTES:
            raise OvfError(
                f"file reference {_show(href)} has a name longer than {MAX_SEGMENT_BYTES} bytes"
            )
    return PurePosixPath(*parts)


# -- manifest -------------------------------------------------------------------------

_DIGEST_HEX = {"sha1": 40, "sha256": 64, "sha512": 128}
_MANIFEST_LINE = re.compile(r"^(SHA1|SHA256|SHA512)\((.+)\)\s*=\s*([0-9A-Fa-f]+)$", re.IGNORECASE)


def parse_manifest(text: str) -> dict[str, tuple[str, str]]:
    """An OVF manifest: `SHA256(disk.vmdk)= <hex>` lines (SHA1 and SHA512 too).

    Returns {href as written: (algorithm lower-case, digest lower-case)}. Blank lines are
    skipped; anything else that is not such a line, a digest of the wrong length, an
    unsafe href or a file listed twice is an OvfError naming the line.
    """
    if len(text) > MAX_MANIFEST_CHARS:
        raise OvfError(f"the manifest is longer than {MAX_MANIFEST_CHARS} characters")
    digests: dict[str, tuple[str, str]] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        match = _MANIFEST_LINE.match(line)
        if match is None:
            raise OvfError(
                f"manifest line {number} is not 'ALGORITHM(file)= digest': {_show(line)}"
            )
        algorithm, href, digest = match.group(1).lower(), match.group(2), match.group(3)
        if len(digest) != _DIGEST_HEX[algorithm]:
            raise OvfError(
                f"manifest line {number}: a {algorithm.upper()} digest has "
                f"{_DIGEST_HEX[algorithm]} hex digits, not {len(digest)}"
            )
        try:
            safe_relative(href)
        except OvfError as e:
            raise OvfError(f"manifest line {number}: {e.message}") from None
        if href in digests:
            raise OvfError(f"manifest line {number}: {_show(href)} is listed twice")
        digests[href] = (algorithm, digest.lower())
    return digests


# -- disk formats ---------------------------------------------------------------------

# The URIs Abiquo has always written and read (its DiskFormatType); written by
# render_envelope so that envelopes stay readable by any Abiquo.
_ABIQUO_FORMAT_URIS: dict[DiskFormat, str] = {
    DiskFormat.UNKNOWN: "http://unknown",
    DiskFormat.RAW: "http://raw",
    DiskFormat.INCOMPATIBLE: "http://incompatible",
    DiskFormat.VMDK_STREAM_OPTIMIZED: "http://www.vmware.com/technical-resources/interfaces/vmdk_access.html#streamOptimized",
    DiskFormat.VMDK_FLAT: "http://www.vmware.com/technical-resources/interfaces/vmdk_access.html#monolithic_flat",
    DiskFormat.VMDK_SPARSE: "http://www.vmware.com/technical-resources/interfaces/vmdk_access.html#monolithic_sparse",
    DiskFormat.VHD_FLAT: "http://technet.microsoft.com/en-us/virtualserver/bb676673.aspx#monolithic_flat",
    DiskFormat.VHD_SPARSE: "http://technet.microsoft.com/en-us/virtualserver/bb676673.aspx#monolithic_sparse",
    DiskFormat.VDI_FLAT: "http://forums.virtualbox.org/viewtopic.php?t=8046#monolithic_flat",
    DiskFormat.VDI_SPARSE: "http://forums.virtualbox.org/viewtopic.php?t=8046#monolithic_sparse",
    DiskFormat.QCOW2_FLAT: "http://people.gnome.org/~markmc/qcow-image-format.html#monolithic_flat",
    DiskFormat.QCOW2_SPARSE: "http://people.gnome.org/~markmc/qcow-image-format.html#monolithic_sparse",
    # Not one Abiquo wrote: Hyper-V's format came after it.
    DiskFormat.VHDX: "http://www.microsoft.com/vhdx",
}
_FORMAT_BY_URI = {uri.lower(): fmt for fmt, uri in _ABIQUO_FORMAT_URIS.items()}


def ovf_format_url(fmt: DiskFormat) -> str:
    """The ovf:format URI written for a format."""
    return _ABIQUO_FORMAT_URIS[fmt]


def disk_format_from_ovf(format_url: str) -> DiskFormat | None:
    """The format a Disk's ovf:format declares; None when absent or not recognised.

    Abiquo's own URIs map exactly; the ones other tools write (ovftool and VirtualBox:
    `.../vmdk.html#streamOptimized`, `#sparse`, `#compressed`, the VHD fwlink, ...) by
    what they name. A URI naming a format this platform has no value for (ISO)
    is None, as is anything unrecognised: the file's real format decides then.
    """
    url = format_url.strip().lower()
    if not url:
        return None
    exact = _FORMAT_BY_URI.get(url)
    if exact is not None:
        return exact
    fragment = url.partition("#")[2].replace("_", "").replace("-", "")
    flat = "flat" in fragment or "fixed" in fragment
    if "vmdk" in url:
        if "streamoptimized" in fragment or "compressed" in fragment:
            return DiskFormat.VMDK_STREAM_OPTIMIZED
        if flat:
            return DiskFormat.VMDK_FLAT
        if "sparse" in fragment:
            return DiskFormat.VMDK_SPARSE
        return None
    if "vhdx" in url:
        return DiskFormat.VHDX
    if "linkid=137171" in url or "vhd" in url:
        return DiskFormat.VHD_FLAT if flat else DiskFormat.VHD_SPARSE
    if "qcow" in url:
        return DiskFormat.QCOW2_FLAT if flat else DiskFormat.QCOW2_SPARSE
    if "vdi" in url or "virtualbox.org" in url:
        return DiskFormat.VDI_FLAT if flat else DiskFormat.VDI_SPARSE
    return None


_VMDK_CREATE_TYPES = {
    "monolithicsparse": DiskFormat.VMDK_SPARSE,
    "monolithicflat": DiskFormat.VMDK_FLAT,
    "streamoptimized": DiskFormat.VMDK_STREAM_OPTIMIZED,
    # A descriptor and extents in other files: a package's single file cannot be one.
    "twogbmaxextentsparse": DiskFormat.INCOMPATIBLE,
    "twogbmaxextentflat": DiskFormat.INCOMPATIBLE,
    "vmfs": DiskFormat.INCOMPATIBLE,
    "vmfssparse": DiskFormat.INCOMPATIBLE,
    "vmfsthin": DiskFormat.INCOMPATIBLE,
    "vmfsraw": DiskFormat.INCOMPATIBLE,
    "vmfsrdm": DiskFormat.INCOMPATIBLE,
    "vmfsrawdevicemap": DiskFormat.INCOMPATIBLE,
    "vmfspassthroughrawdevicemap": DiskFormat.INCOMPATIBLE,
    "fulldevice": DiskFormat.INCOMPATIBLE,
    "partitioneddevice": DiskFormat.INCOMPATIBLE,
}


def _lower_str(value: Any) -> str:
    return value.strip().lower() if isinstance(value, str) else ""


def disk_format_from_qemu(info: Mapping[str, Any]) -> DiskFormat:
    """What a file really is, from `qemu-img info --output=json`.

    raw → RAW; qcow2 → QCOW2_SPARSE (qemu does not report preallocation); vmdk by its
    create-type (monolithicSparse, monolithicFlat, streamOptimized; the split and VMFS
    ones are INCOMPATIBLE); vpc → VHD_SPARSE, VHD_FLAT when a `subformat` of "fixed" is
    given (qemu-img does not report it; callers that know may add it to the info or to
    format-specific data); vdi → VDI_SPARSE, VDI_FLAT for a "static"/"fixed" subformat.
    Everything else (qcow v1, ISO, ...) and malformed info is UNKNOWN.
    """
    if not isinstance(info, Mapping):
        return DiskFormat.UNKNOWN
    driver = _lower_str(info.get("format"))
    specific = info.get("format-specific")
    data: Mapping[str, Any] = {}
    if isinstance(specific, Mapping) and isinstance(specific.get("data"), Mapping):
        data = specific["data"]
    subformat = _lower_str(data.get("subformat")) or _lower_str(info.get("subformat"))
    if driver == "raw":
        return DiskFormat.RAW
    if driver == "qcow2":
        return DiskFormat.QCOW2_SPARSE
    if driver == "vmdk":
        create_type = _lower_str(data.get("create-type")) or subformat
        return _VMDK_CREATE_TYPES.get(create_type, DiskFormat.UNKNOWN)
    if driver == "vpc":
        return DiskFormat.VHD_FLAT if subformat == "fixed" else DiskFormat.VHD_SPARSE
    if driver == "vdi":
        return DiskFormat.VDI_FLAT if subformat in ("static", "fixed") else DiskFormat.VDI_SPARSE
    if driver == "vhdx":
        return DiskFormat.VHDX
    return DiskFormat.UNKNOWN


# -- numbers and units ----------------------------------------------------------------

# ASCII digits only: int() would take other scripts' digits too.
_WHOLE = re.compile(r"^[0-9]{1,30}$")
_NAMED_UNITS = {
    "byte": 1,
    "bytes": 1,
    "b": 1,
    "kb": 1024,
    "kib": 1024,
    "kilobyte": 1024,
    "kilobytes": 1024,
    "mb": 1024**2,
    "mib": 1024**2,
    "megabyte": 1024**2,
    "megabytes": 1024**2,
    "gb": 1024**3,
    "gib": 1024**3,
    "gigabyte": 1024**3,
    "gigabytes": 1024**3,
    "tb": 1024**4,
    "tib": 1024**4,
    "terabyte": 1024**4,
    "terabytes": 1024**4,
}
# DSP0004 programmatic units: "byte", "byte * 2^20", "byte * 10^6", "byte * 2^10 * 2^10".
_PROGRAMMATIC = re.compile(r"^byte((?:\*(?:2|10)\^\d{1,3})*)$")
_FACTOR = re.compile(r"\*(2|10)\^(\d{1,3})")


def _whole(value: str, what: str) -> int:
    text = value.strip()
    if text.startswith("-") and _WHOLE.match(text[1:]):
        raise OvfError(f"{what} {_show(value)} is negative")
    if text.startswith("${"):
        raise OvfError(f"{what} {_show(value)} refers to a property; a number is needed")
    if not _WHOLE.match(text):
        raise OvfError(f"{what} {_show(value)} is not a whole number")
    return int(text)


def _unit_factor(units: str | None, what: str) -> int:
    """Bytes per unit, for CIM allocation units; absent means bytes (as Abiquo read it)."""
    if units is None or not units.strip():
        return 1
    compact = re.sub(r"\s+", "", units).lower()
    if compact in _NAMED_UNITS:
        return _NAMED_UNITS[compact]
    match = _PROGRAMMATIC.match(compact)
    if match is None:
        raise OvfError(f"{what} {_show(units)} are not units of bytes this platform knows")
    factor = 1
    for base, exponent in _FACTOR.findall(match.group(1)):
        factor *= int(base) ** int(exponent)
        if factor > MAX_DISK_BYTES:
            raise OvfError(f"{what} {_show(units)} are absurdly large")
    return factor


# -- the envelope ---------------------------------------------------------------------


def _local(tag: object) -> str:
    # Comments and processing instructions have a function as their tag.
    return tag.rpartition("}")[2] if isinstance(tag, str) else ""


class _Reader:
    """Looks elements and attributes up in the envelope's OVF namespace (1.x or 2.x)."""

    def __init__(self, ns: str) -> None:
        self.ns = ns

    def q(self, name: str) -> str:
        return f"{{{self.ns}}}{name}"

    def attr(self, element: Element, name: str) -> str | None:
        # Qualified as the schema has it; unqualified from the tools that write it so.
        value = element.get(self.q(name))
        return element.get(name) if value is None else value

    def children(self, element: Element, name: str) -> list[Element]:
        return element.findall(self.q(name))

    def child_text(self, element: Element, name: str) -> str:
        found = element.find(self.q(name))
        return (found.text or "").strip() if found is not None else ""


def _rasd(item: Element, name: str) -> str | None:
    # rasd:, sasd: and epasd: properties share their names; the namespace does not matter.
    for child in item:
        if _local(child.tag) == name:
            return (child.text or "").strip()
    return None


def read_xml(data: bytes, max_bytes: int, what: str, error: type[InvalidInput]) -> Element:
    """defusedxml's parse of an untrusted document (no DTD, hence no entity), every
    failure, the size included, as `error` with `what` naming the document."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise error(f"the {what} must be bytes")
    if len(data) > max_bytes:
        raise error(f"the {what} is {len(data)} bytes; at most {max_bytes} are accepted")
    try:
        root: Element = SafeET.fromstring(bytes(data), forbid_dtd=True)
    except DefusedXmlException as e:
        # DTDs are refused outright: that covers internal entities (billion laughs) and
        # external ones (file and network reads) alike.
        raise error(
            f"the {what} declares a DTD or entities, which are not accepted ({e})"
        ) from None
    except ParseError as e:
        raise error(f"the {what} is not well-formed XML ({e})") from None
    except (ValueError, LookupError, UnicodeError) as e:
        # An unknown or inconsistent declared encoding.
        raise error(f"the {what} cannot be decoded ({e})") from None
    return root


def _read_files(rd: _Reader, root: Element) -> tuple[OvfFile, ...]:
    files: list[OvfFile] = []
    ids: set[str] = set()
    paths: dict[PurePosixPath, str] = {}
    for references in rd.children(root, "References"):
        for element in rd.children(references, "File"):
            file_id = (rd.attr(element, "id") or "").strip()
            if not file_id:
                raise OvfError("a References/File has no ovf:id")
            if file_id in ids:
                raise OvfError(f"file id {_show(file_id)} is used twice")
            ids.add(file_id)
            href = rd.attr(element, "href")
            if href is None:
                raise OvfError(f"file {_show(file_id)} has no ovf:href")
            try:
                path = safe_relative(href)
            except OvfError as e:
                raise OvfError(f"file {_show(file_id)}: {e.message}") from None
            if path in paths:
                raise OvfError(
                    f"files {_show(paths[path])} and {_show(file_id)} are both {_show(str(path))}"
                )
            paths[path] = file_id
            size_text = rd.attr(element, "size")
            size = None
            if size_text is not None and size_text.strip():
                size = _whole(size_text, f"the size of file {_show(file_id)}")
                if size > MAX_DISK_BYTES:
                    raise OvfError(
                        f"file {_show(file_id)} is {size} bytes, more than the "
                        f"{MAX_DISK_BYTES} accepted"
                    )
            # Chunked and compressed files would be stored as something other than what
            # the disk is; refused rather than half-supported.
            if rd.attr(element, "chunkSize") is not None:
                raise OvfError(f"file {_show(file_id)} is split in chunks, which is not supported")
            compression = (rd.attr(element, "compression") or "").strip().lower()
            if compression not in ("", "identity"):
                raise OvfError(
                    f"file {_show(file_id)} is compressed "
                    f"({_show(compression)}), which is not supported"
                )
            files.append(OvfFile(id=file_id, href=href, path=path, size=size))
    return tuple(files)


def _read_disks(rd: _Reader, root: Element, file_ids: set[str]) -> tuple[OvfDisk, ...]:
    disks: list[OvfDisk] = []
    ids: set[str] = set()
    for section in rd.children(root, "DiskSection"):
        for element in rd.children(section, "Disk"):
            disk_id = (rd.attr(element, "diskId") or "").strip()
            if not disk_id:
                raise OvfError("a DiskSection/Disk has no ovf:diskId")
            if disk_id in ids:
                raise OvfError(f"disk id {_show(disk_id)} is used twice")
            ids.add(disk_id)
            file_id = (rd.attr(element, "fileRef") or "").strip()
            if not file_id:
                raise OvfError(
                    f"disk {_show(disk_id)} has no file (ovf:fileRef): blank "
                    "disks cannot be a template's"
                )
            if file_id not in file_ids:
                raise OvfError(
                    f"disk {_show(disk_id)} refers to file {_show(file_id)}, "
                    "which References does not list"
                )
            capacity = None
            capacity_text = rd.attr(element, "capacity")
            if capacity_text is not None and capacity_text.strip():
                amount = _whole(capacity_text, f"the capacity of disk {_show(disk_id)}")
                factor = _unit_factor(
                    rd.attr(element, "capacityAllocationUnits"),
                    f"the capacity allocation units of disk {_show(disk_id)}",
                )
                capacity = amount * factor
                if capacity > MAX_DISK_BYTES:
                    raise OvfError(
                        f"disk {_show(disk_id)} has a capacity of {capacity} bytes, "
                        f"more than the {MAX_DISK_BYTES} accepted"
                    )
            declared = disk_format_from_ovf(rd.attr(element, "format") or "")
            disks.append(
                OvfDisk(disk_id=disk_id, file_id=file_id, capacity_bytes=capacity, format=declared)
            )
    if not disks:
        raise OvfError("the envelope has no disk (DiskSection/Disk)")
    return tuple(disks)


def _virtual_system(rd: _Reader, root: Element) -> Element:
    # A VirtualSystemCollection of one is fine: what matters is that there is one system.
    systems = list(root.iter(rd.q("VirtualSystem")))
    if not systems:
        raise OvfError("the envelope has no VirtualSystem")
    if len(systems) > 1:
        raise OvfError(f"the envelope holds {len(systems)} virtual systems; a template is one")
    return systems[0]


def _hardware(
    rd: _Reader, system: Element, disks: Sequence[OvfDisk]
) -> tuple[int | None, int | None, int | None]:
    cpu: int | None = None
    ram_mb: int | None = None
    hd_disk: OvfDisk | None = None
    by_id = {d.disk_id: d for d in disks}
    for section in system.iter(rd.q("VirtualHardwareSection")):
        for item in section:
            if _local(item.tag) not in ("Item", "StorageItem"):
                continue
            kind = _rasd(item, "ResourceType")
            if kind is None or not _WHOLE.match(kind) or len(kind) > 6:
                continue  # a resource this platform does not read
            resource = int(kind)
            if resource == _CPU and cpu is None:
                quantity = _rasd(item, "VirtualQuantity")
                if quantity is None:
                    raise OvfError("the CPU Item has no VirtualQuantity")
                cpu = _whole(quantity, "the number of CPUs")
                if not 1 <= cpu <= MAX_CPU:
                    raise OvfError(f"{cpu} CPUs: between 1 and {MAX_CPU} are accepted")
            elif resource == _MEMORY and ram_mb is None:
                quantity = _rasd(item, "VirtualQuantity")
                if quantity is None:
                    raise OvfError("the memory Item has no VirtualQuantity")
                amount = _whole(quantity, "the memory size")
                factor = _unit_factor(_rasd(item, "AllocationUnits"), "the memory units")
                ram_mb = -(-amount * factor // 1024**2)  # whole MB, rounded up
                if not 1 <= ram_mb <= MAX_RAM_MB:
                    raise OvfError(
                        f"{ram_mb} MB of memory: between 1 and {MAX_RAM_MB} are accepted"
                    )
            elif resource == _DISK_DRIVE and hd_disk is None:
                host = _rasd(item, "HostResource") or ""
                for prefix in ("ovf:/disk/", "/disk/"):
                    if host.startswith(prefix):
                        disk_id = host[len(prefix) :]
                        if disk_id not in by_id:
                            raise OvfError(
                                f"a disk drive Item refers to disk {_show(disk_id)}, "
                                "which DiskSection does not list"
                            )
                        hd_disk = by_id[disk_id]
                        break
    hd = (hd_disk or disks[0]).capacity_bytes
    return cpu, ram_mb, hd


def _product(rd: _Reader, system: Element) -> Element | None:
    sections = list(system.iter(rd.q("ProductSection")))
    for section in sections:
        if rd.child_text(section, "Product"):
            return section
    return sections[0] if sections else None


def _icon(rd: _Reader, product: Element | None, files: Sequence[OvfFile], base_url: str) -> str:
    if product is None:
        return ""
    icons = rd.children(product, "Icon")
    if not icons:
        return ""
    ref = (rd.attr(icons[0], "fileRef") or "").strip()
    # Abiquo's icons are either a file of the package (its id) or a URL.
    for file in files:
        if file.id == ref:
            if not base_url:
                return file.href
            if not _is_web_url(base_url):
                return ""
            try:
                url = urljoin(base_url, file.href)
            except ValueError:
                return ""
            return url if _is_web_url(url) else ""
    # Anything else is shown to users as a link: only the web's schemes.
    return ref if _is_web_url(ref) else ""


def _is_web_url(url: str) -> bool:
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        return False
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def parse_envelope(data: bytes, *, max_bytes: int = 4 * 1024**2, base_url: str = "") -> Envelope:
    """Read an OVF envelope; OvfError for anything the repository cannot take.

    `base_url`, the envelope's own URL when it was downloaded, makes an icon that is a
    file of the package an absolute URL.

    Refused: more than `max_bytes`, not XML, a DTD or entities, a root that is not an OVF
    Envelope, files with unsafe hrefs, chunked or compressed files, two files with one
    id or path, no disk, a disk without its file, duplicate disk ids, sizes that are not
    whole numbers, negative or beyond the limits, allocation units that are not bytes,
    no VirtualSystem or several, no name.
    """
    root = read_xml(data, max_bytes, "OVF envelope", OvfError)
    ns, _, local = root.tag.partition("}") if root.tag.startswith("{") else ("", "", root.tag)
    ns = ns.lstrip("{")
    if local != "Envelope" or ns not in (OVF_NS, OVF2_NS):
        raise OvfError(
            f"the document is not an OVF envelope: its root is {_show(root.tag)}, "
            f"not {{{OVF_NS}}}Envelope"
        )
    rd = _Reader(ns)
    files = _read_files(rd, root)
    disks = _read_disks(rd, root, {f.id for f in files})
    system = _virtual_system(rd, root)
    cpu, ram_mb, hd_bytes = _hardware(rd, system, disks)
    product = _product(rd, system)

    name = rd.child_text(product, "Product") if product is not None else ""
    name = name or rd.child_text(system, "Name") or (rd.attr(system, "id") or "").strip()
    if not name:
        raise OvfError(
            "the envelope names no template: no ProductSection Product, "
            "VirtualSystem Name or ovf:id"
        )
    description = ""
    for annotation in system.iter(rd.q("AnnotationSection")):
        description = rd.child_text(annotation, "Annotation")
        break
    if not description and product is not None:
        description = rd.child_text(product, "Info")
    category = ""
    if product is not None:
        category = (rd.attr(product, "CategoryName") or "").strip()
    return Envelope(
        name=name,
        description=description,
        files=files,
        disks=disks,
        cpu=cpu,
        ram_mb=ram_mb,
        hd_bytes=hd_bytes,
        icon_url=_icon(rd, product, files, base_url),
        category=category,
    )


# -- writing --------------------------------------------------------------------------

_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def xml_text(value: str, what: str, error: type[InvalidInput] = OvfError) -> str:
    """Element content, escaped; a carriage return kept (parsers turn a bare one into \\n)."""
    if _XML_INVALID.search(value):
        raise error(f"{what} {_show(value)} holds characters XML cannot carry")
    return escape(value).replace("\r", "&#13;")


def xml_attr(value: str, what: str, error: type[InvalidInput] = OvfError) -> str:
    """An attribute value, quoted and escaped (newlines and tabs survive as references)."""
    if _XML_INVALID.search(value):
        raise error(f"{what} {_show(value)} holds characters XML cannot carry")
    return quoteattr(value, {"\n": "&#10;", "\r": "&#13;", "\t": "&#9;"})


def render_envelope(
    *,
    name: str,
    description: str = "",
    files: Sequence[OvfFile],
    disks: Sequence[OvfDisk],
    cpu: int | None = None,
    ram_mb: int | None = None,
    icon_url: str = "",
    category: str = "",
) -> bytes:
    """A minimal valid OVF 1.x envelope holding these values.

    parse_envelope gives them back (text stripped of surrounding spaces, as it reads
    it), with hd_bytes the first disk's capacity. An icon_url that is the href of one of
    `files` is written as that file's id, as Abiquo does. Anything parse_envelope would
    refuse is an OvfError here too.
    """
    if not name.strip():
        # parse_envelope would name it after the VirtualSystem's id instead.
        raise OvfError("the envelope names no template: the name is empty")
    a = xml_attr
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<Envelope xmlns="{OVF_NS}" xmlns:ovf="{OVF_NS}" xmlns:rasd="{RASD_NS}" '
        f'xmlns:vssd="{VSSD_NS}">',
        "  <References>",
    ]
    for f in files:
        size = "" if f.size is None else f" ovf:size={a(str(f.size), 'size')}"
        lines.append(f"    <File ovf:id={a(f.id, 'file id')} ovf:href={a(f.href, 'href')}{size}/>")
    lines += [
        "  </References>",
        "  <DiskSection>",
        "    <Info>Virtual disk information</Info>",
    ]
    for d in disks:
        attrs = f"ovf:diskId={a(d.disk_id, 'disk id')} ovf:fileRef={a(d.file_id, 'file ref')}"
        if d.capacity_bytes is not None:
            attrs += f' ovf:capacity="{d.capacity_bytes}" ovf:capacityAllocationUnits="byte"'
        if d.format is not None:
            attrs += f" ovf:format={a(ovf_format_url(d.format), 'format')}"
        lines.append(f"    <Disk {attrs}/>")
    lines += [
        "  </DiskSection>",
        '  <VirtualSystem ovf:id="vm">',
        "    <Info>A virtual machine</Info>",
        f"    <Name>{xml_text(name, 'name')}</Name>",
    ]
    if description:
        lines += [
            "    <AnnotationSection>",
            "      <Info>A human-readable annotation</Info>",
            f"      <Annotation>{xml_text(description, 'description')}</Annotation>",
            "    </AnnotationSection>",
        ]
    category_attr = f" CategoryName={a(category, 'category')}" if category else ""
    lines += [
        f"    <ProductSection{category_attr}>",
        f"      <Info>{xml_text(description, 'description')}</Info>",
        f"      <Product>{xml_text(name, 'name')}</Product>",
    ]
    if icon_url:
        ref = next((f.id for f in files if f.href == icon_url), None)
        if ref is None:
            if not _is_web_url(icon_url):
                raise OvfError(
                    f"icon {_show(icon_url)} is neither an http(s) URL nor the "
                    "href of one of the files"
                )
            ref = icon_url
        lines.append(f"      <Icon ovf:fileRef={a(ref, 'icon')}/>")
    lines += [
        "    </ProductSection>",
        "    <VirtualHardwareSection>",
        "      <Info>Virtual hardware requirements</Info>",
        "      <System>",
        "        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>",
        "        <vssd:InstanceID>0</vssd:InstanceID>",
        "        <vssd:VirtualSystemType>abiquo</vssd:VirtualSystemType>",
        "      </System>",
    ]
    instance = 0

    def item(
        resource: int,
        element_name: str,
        *,
        units: str = "",
        host: str = "",
        quantity: int | None = None,
    ) -> None:
        # rasd properties in the order the CIM schema declares them.
        nonlocal instance
        instance += 1
        lines.append("      <Item>")
        if units:
            lines.append(f"        <rasd:AllocationUnits>{units}</rasd:AllocationUnits>")
        lines.append(
            f"        <rasd:ElementName>{xml_text(element_name, 'item')}</rasd:ElementName>"
        )
        if host:
            lines.append(
                f"        <rasd:HostResource>{xml_text(host, 'disk id')}</rasd:HostResource>"
            )
        lines.append(f"        <rasd:InstanceID>{instance}</rasd:InstanceID>")
        lines.append(f"        <rasd:ResourceType>{resource}</rasd:ResourceType>")
        if quantity is not None:
            lines.append(f"        <rasd:VirtualQuantity>{quantity}</rasd:VirtualQuantity>")
        lines.append("      </Item>")

    if cpu is not None:
        item(_CPU, f"{cpu} virtual CPU(s)", quantity=cpu)
    if ram_mb is not None:
        item(_MEMORY, f"{ram_mb} MB of memory", units="byte * 2^20", quantity=ram_mb)
    for n, d in enumerate(disks):
        item(_DISK_DRIVE, f"Hard disk {n + 1}", host=f"ovf:/disk/{d.disk_id}")
    lines += [
        "    </VirtualHardwareSection>",
        "  </VirtualSystem>",
        "</Envelope>",
        "",
    ]
    document = "\n".join(lines).encode("utf-8")
    # The parser is the definition of valid: what it would refuse is not written.
    parse_envelope(document, max_bytes=max(len(document), 1))
    return document
