"""Remote template catalogues: Abiquo's ovfindex.xml.

The format (Abiquo's RepositorySpace schema, namespace
http://www.abiquo.com/appliancemanager/repositoryspace, here `rs:`):

    <rs:RepositorySpace rs:RepositoryName="..." rs:RepositoryURI="http://host/ovfindex.xml">
      <rs:OVFDescription rs:OVFFile="ubuntu/ubuntu.ovf" rs:OVFCategories="Linux OS"
                         rs:DiskFormat="VMDK_STREAM_OPTIMIZED" rs:DiskSize="1024">
        <ovf:Info>description</ovf:Info>
        <ovf:Product>name</ovf:Product>
        <ovf:Icon ovf:fileRef="http://host/ubuntu.png"/>
      </rs:OVFDescription>
      ...

An OVFDescription is an OVF ProductSection plus the attributes above. How each is read:

- OVFFile, required: the envelope's URL, resolved against the entry's RepositoryURI,
  else the catalogue's, else the URL the catalogue was fetched from. A RepositoryURI
  that names a document (ends in a name with a dot, as `.../ovfindex.xml`) is resolved
  against as a URL is; one that does not is taken as a directory, as Abiquo appended
  "/" + OVFFile to it. Only http and https URLs are accepted. An entry without an
  OVFFile, or whose URL is not acceptable, makes the whole catalogue a CatalogueError
  naming the entry: a catalogue is published by someone who needs to know, and
  silently showing part of it would hide the mistake.
- OVFCategories: comma-separated; the first is the template's category.
- DiskFormat: a DiskFormat name (Abiquo's DiskFormatType), "STREAM_OPTIMIZED" being the
  old name of VMDK_STREAM_OPTIMIZED; an ovf:format URL is read as in envelopes; any
  other value is UNKNOWN, as Abiquo read it.
- DiskSize: megabytes (what Abiquo's catalogues write).
- CPU and RAM (megabytes): this platform's addition, absent from Abiquo's catalogues
  (the schema lets a ProductSection carry any attribute).
- Icon: the first one's ovf:fileRef, resolved like OVFFile; dropped (not an error) when
  it is not an http(s) URL then, since it is only ever shown.

Parsing is defusedxml's with DTDs forbidden; every failure is a CatalogueError.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote, urljoin, urlsplit
from xml.etree.ElementTree import Element

from abiquo_dc.am.ovf import (
    MAX_CPU,
    MAX_DISK_BYTES,
    MAX_RAM_MB,
    OVF_NS,
    disk_format_from_ovf,
    read_xml,
    xml_attr,
    xml_text,
)
from abiquo_dc.protocol.definitions import DiskFormat
from abiquo_runtime.errors import InvalidInput

RS_NS = "http://www.abiquo.com/appliancemanager/repositoryspace"
MAX_DISK_MB = MAX_DISK_BYTES // 1024**2
MAX_URL_CHARS = 4096


class CatalogueError(InvalidInput):
    """A catalogue (ovfindex.xml) that cannot be read as one."""

    code = "AM-CATALOGUE"


@dataclass(frozen=True)
class CatalogueEntry:
    """One template a catalogue offers."""

    # Absolute http(s) URL of the template's OVF envelope.
    ovf_url: str
    name: str
    description: str
    category: str  # "" for none
    icon_url: str  # absolute http(s) URL, "" for none
    disk_format: DiskFormat | None  # as the catalogue declares it; None when it does not
    disk_size: int | None  # megabytes, as the catalogue says
    cpu: int | None
    ram_mb: int | None

    @property
    def disk_size_bytes(self) -> int | None:
        return None if self.disk_size is None else self.disk_size * 1024**2


def _show(value: str, limit: int = 80) -> str:
    return repr(value[:limit]) + "..." if len(value) > limit else repr(value)


def _attr(element: Element, name: str) -> str | None:
    # Qualified as Abiquo's JAXB writes them; unqualified as hand-written ones may be.
    value = element.get(f"{{{RS_NS}}}{name}")
    return element.get(name) if value is None else value


def _ovf_text(element: Element, name: str) -> str:
    found = element.find(f"{{{OVF_NS}}}{name}")
    if found is None:
        found = element.find(name)
    return (found.text or "").strip() if found is not None else ""


def _web_url(url: str) -> str | None:
    """`url` with spaces and non-ASCII percent-encoded, if it is an absolute http(s) URL."""
    if len(url) > MAX_URL_CHARS or _has_control(url):
        return None
    # Encode what a URL may not hold as is (spaces, non-ASCII, quotes, braces) and keep
    # every reserved character and existing escape.
    encoded = quote(url, safe="!#$%&'()*+,/:;=?@[]~")
    try:
        parts = urlsplit(encoded)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return encoded


def _as_base(uri: str) -> str:
    """A RepositoryURI as a base to resolve against (see the module's docstring)."""
    path = urlsplit(uri).path
    last = path.rsplit("/", 1)[-1]
    if path and not path.endswith("/") and "." not in last:
        return uri + "/"
    return uri


def _has_control(text: str) -> bool:
    return any(ord(c) < 0x20 or ord(c) == 0x7F for c in text)


def _resolve(base: str, reference: str) -> str | None:
    # urlsplit silently drops tabs and newlines: look before it does.
    if _has_control(reference):
        return None
    try:
        return _web_url(urljoin(base, reference))
    except ValueError:
        return None


def _whole(value: str, what: str, limit: int) -> int:
    text = value.strip()
    if not re.fullmatch(r"[0-9]{1,20}", text):
        raise CatalogueError(f"{what} {_show(value)} is not a whole number")
    number = int(text)
    if number > limit:
        raise CatalogueError(f"{what} {number} is more than the {limit} accepted")
    return number


def _disk_format(value: str | None) -> DiskFormat | None:
    if value is None or not value.strip():
        return None
    text = value.strip()
    if "://" in text:
        return disk_format_from_ovf(text) or DiskFormat.UNKNOWN
    name = text.upper()
    if name == "STREAM_OPTIMIZED":
        return DiskFormat.VMDK_STREAM_OPTIMIZED
    try:
        return DiskFormat(name)
    except ValueError:
        return DiskFormat.UNKNOWN


def parse_catalogue(
    data: bytes, *, base_url: str, max_bytes: int = 4 * 1024**2
) -> tuple[str, list[CatalogueEntry]]:
    """(The repository's name, its entries in document order) from an ovfindex.xml.

    `base_url` is the URL the catalogue was fetched from. CatalogueError for: more than
    `max_bytes`, not XML, a DTD or entities, a root that is not a RepositorySpace, a
    base URL that is not http(s), and any entry that is wrong (no OVFFile, a URL that is
    not http(s), the same URL twice, sizes that are not whole numbers or are beyond
    the limits), the message naming the entry. A catalogue with no entries is valid.
    """
    base = _web_url(base_url)
    if base is None:
        raise CatalogueError(f"the catalogue's URL {_show(base_url)} is not an http(s) URL")
    root = read_xml(data, max_bytes, "catalogue", CatalogueError)
    if root.tag not in (f"{{{RS_NS}}}RepositorySpace", "RepositorySpace"):
        raise CatalogueError(
            f"the document is not a catalogue: its root is {_show(root.tag)}, "
            f"not {{{RS_NS}}}RepositorySpace"
        )
    name = (_attr(root, "RepositoryName") or "").strip()
    root_uri = (_attr(root, "RepositoryURI") or "").strip()
    entries: list[CatalogueEntry] = []
    seen: dict[str, int] = {}
    descriptions = [e for e in root if e.tag in (f"{{{RS_NS}}}OVFDescription", "OVFDescription")]
    for number, element in enumerate(descriptions, start=1):
        entry = _entry(element, number, base, root_uri)
        if entry.ovf_url in seen:
            raise CatalogueError(
                f"entries {seen[entry.ovf_url]} and {number} are both {_show(entry.ovf_url)}"
            )
        seen[entry.ovf_url] = number
        entries.append(entry)
    return name, entries


def _entry(element: Element, number: int, base_url: str, root_uri: str) -> CatalogueEntry:
    product = _ovf_text(element, "Product")
    ovf_file = (_attr(element, "OVFFile") or "").strip()
    label = f"entry {number}" + (f" ({_show(product)})" if product else "")
    if not ovf_file:
        raise CatalogueError(f"{label} has no OVFFile: the catalogue does not say where it is")
    label = f"entry {number} ({_show(product or ovf_file)})"
    base = base_url
    repository_uri = (_attr(element, "RepositoryURI") or "").strip() or root_uri
    if repository_uri:
        resolved = _resolve(base_url, repository_uri)
        if resolved is None:
            raise CatalogueError(
                f"{label}: its RepositoryURI {_show(repository_uri)} is not an http(s) URL"
            )
        base = _as_base(resolved)
    ovf_url = _resolve(base, ovf_file)
    if ovf_url is None:
        raise CatalogueError(
            f"{label}: OVFFile {_show(ovf_file)} does not resolve to an http(s) URL"
        )

    icon_url = ""
    icon = element.find(f"{{{OVF_NS}}}Icon")
    if icon is not None:
        ref = (icon.get(f"{{{OVF_NS}}}fileRef") or icon.get("fileRef") or "").strip()
        icon_url = (_resolve(base, ref) or "") if ref else ""

    categories = (_attr(element, "OVFCategories") or "").split(",")
    size = _attr(element, "DiskSize")
    cpu = _attr(element, "CPU")
    ram = _attr(element, "RAM")
    cpu_count = _whole(cpu, f"{label}: CPU", MAX_CPU) if cpu and cpu.strip() else None
    ram_mb = _whole(ram, f"{label}: RAM", MAX_RAM_MB) if ram and ram.strip() else None
    if cpu_count == 0 or ram_mb == 0:
        raise CatalogueError(f"{label}: CPU and RAM must be more than 0")
    return CatalogueEntry(
        ovf_url=ovf_url,
        # A product without a name is shown by its file's (or its URL's, for want of one).
        name=product or ovf_url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".ovf") or ovf_url,
        description=_ovf_text(element, "Info"),
        category=categories[0].strip(),
        icon_url=icon_url,
        disk_format=_disk_format(_attr(element, "DiskFormat")),
        disk_size=(
            _whole(size, f"{label}: DiskSize", MAX_DISK_MB) if size and size.strip() else None
        ),
        cpu=cpu_count,
        ram_mb=ram_mb,
    )


def render_catalogue(
    name: str, entries: Sequence[CatalogueEntry], *, repository_uri: str = ""
) -> bytes:
    """An ovfindex.xml listing `entries`, as Abiquo's catalogues are written.

    OVFFile and Icon are written as the entries' absolute URLs, so the document reads
    the same from wherever it is served; RepositoryURI is written when given.
    parse_catalogue gives the entries back (text stripped of surrounding spaces, as it
    reads it). CatalogueError for what it would not read back the same: a category with
    a comma, a URL that is not http(s), numbers out of range.
    """

    def a(value: str, what: str) -> str:
        return xml_attr(value, what, CatalogueError)

    def t(value: str, what: str) -> str:
        return xml_text(value, what, CatalogueError)

    head = f'<ns2:RepositorySpace xmlns:ns1="{OVF_NS}" xmlns:ns2="{RS_NS}"'
    head += f" ns2:RepositoryName={a(name, 'repository name')}"
    if repository_uri:
        head += f" ns2:RepositoryURI={a(repository_uri, 'repository URI')}"
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', head + ">"]
    for entry in entries:
        if not entry.name.strip():
            raise CatalogueError(f"the entry for {_show(entry.ovf_url)} has no name")
        if "," in entry.category:
            raise CatalogueError(
                f"category {_show(entry.category)} has a comma, which separates categories"
            )
        attrs = f"ns2:OVFFile={a(entry.ovf_url, 'OVF URL')}"
        if entry.category:
            attrs += f" ns2:OVFCategories={a(entry.category, 'category')}"
        if entry.disk_format is not None:
            attrs += f' ns2:DiskFormat="{entry.disk_format.value}"'
        if entry.disk_size is not None:
            attrs += f' ns2:DiskSize="{entry.disk_size}"'
        if entry.cpu is not None:
            attrs += f' ns2:CPU="{entry.cpu}"'
        if entry.ram_mb is not None:
            attrs += f' ns2:RAM="{entry.ram_mb}"'
        lines.append(f"  <ns2:OVFDescription {attrs}>")
        lines.append(f"    <ns1:Info>{t(entry.description, 'description')}</ns1:Info>")
        lines.append(f"    <ns1:Product>{t(entry.name, 'name')}</ns1:Product>")
        if entry.icon_url:
            lines.append(f"    <ns1:Icon ns1:fileRef={a(entry.icon_url, 'icon URL')}/>")
        lines.append("  </ns2:OVFDescription>")
    lines += ["</ns2:RepositorySpace>", ""]
    document = "\n".join(lines).encode("utf-8")
    # Written only if it reads back: the parser is the definition of valid.
    _, read = parse_catalogue(
        document, base_url=repository_uri or "http://localhost/", max_bytes=len(document)
    )
    for entry, back in zip(entries, read, strict=True):
        if back.ovf_url != entry.ovf_url or back.icon_url != entry.icon_url:
            raise CatalogueError(
                f"entry {_show(entry.name)}: its URLs must be absolute http(s) URLs "
                "written as they are sent"
            )
    return document
