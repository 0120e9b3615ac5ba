"""Remote catalogues (ovfindex.xml): Abiquo's shape, URL resolution, every refusal, the
round trip, and fuzzing (whatever comes in, the answer is a value or a CatalogueError)."""

from __future__ import annotations

import re
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from abiquo_dc.am.catalogue import (
    MAX_DISK_MB,
    RS_NS,
    CatalogueEntry,
    CatalogueError,
    parse_catalogue,
    render_catalogue,
)
from abiquo_dc.protocol.definitions import DiskFormat
from tests.dc.am.test_ovf import FUZZ, FUZZ_SHAPES, mutated, refuses_cleanly, xmlish

BASE = "http://repository.example.com/abiquo/ovfindex.xml"

# Shaped like the ovfindex.xml Abiquo's catalogues publish (JAXB's ns1..ns5 prefixes,
# every attribute qualified, ProductSection's ovf:instance and ovf:class written empty).
ABIQUO_INDEX = b"""<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<ns2:RepositorySpace xmlns:ns1="http://schemas.dmtf.org/ovf/envelope/1"
    xmlns:ns2="http://www.abiquo.com/appliancemanager/repositoryspace"
    xmlns:ns3="http://schemas.dmtf.org/wbem/wscim/1/common"
    xmlns:ns4="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"
    xmlns:ns5="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
    ns2:RepositoryName="Abiquo Repository 3.0"
    ns2:RepositoryURI="http://repository.example.com/abiquo/ovfindex.xml">
  <ns2:OVFDescription ns2:OVFFile="ubuntu-14.04/ubuntu-14.04.ovf" ns2:DiskFormat="STREAM_OPTIMIZED"
      ns2:DiskSize="913" ns2:OVFCategories="Linux OS" ns1:instance="" ns1:class="OS">
    <ns1:Info>Ubuntu Server 14.04 LTS, 64 bits. Built 20150612.</ns1:Info>
    <ns1:Product>Ubuntu 14.04</ns1:Product>
    <ns1:Icon ns1:fileRef="http://icons.example.com/ubuntu.png" ns1:mimeType="image/png"
        ns1:width="200" ns1:height="200"/>
  </ns2:OVFDescription>
  <ns2:OVFDescription ns2:OVFFile="http://mirror.example.org/tiny/tiny.ovf"
      ns2:DiskFormat="QCOW2_SPARSE" ns2:OVFCategories="Networking,Appliances">
    <ns1:Info>A tiny router</ns1:Info>
    <ns1:Product>Tiny Router</ns1:Product>
    <ns1:Icon ns1:fileRef="icons/tiny.png" ns1:mimeType="image/png" ns1:width="32"
        ns1:height="32"/>
  </ns2:OVFDescription>
  <ns2:OVFDescription ns2:OVFFile="windows/w2k12.ovf" ns2:DiskFormat="KVM"
      ns2:DiskSize="" ns2:RepositoryURI="https://other.example.net/templates">
    <ns1:Info>Windows Server 2012 R2 evaluation</ns1:Info>
    <ns1:Product>Windows 2012</ns1:Product>
    <ns1:Icon ns1:fileRef="javascript:alert(1)"/>
  </ns2:OVFDescription>
  <ns2:OVFDescription ns2:OVFFile="/alpine/alpine.ovf" ns2:DiskSize="64">
    <ns1:Info></ns1:Info>
  </ns2:OVFDescription>
</ns2:RepositorySpace>
"""


def test_an_abiquo_catalogue() -> None:
    name, entries = parse_catalogue(ABIQUO_INDEX, base_url=BASE)
    assert name == "Abiquo Repository 3.0"
    assert entries == [
        CatalogueEntry(
            ovf_url="http://repository.example.com/abiquo/ubuntu-14.04/ubuntu-14.04.ovf",
            name="Ubuntu 14.04",
            description="Ubuntu Server 14.04 LTS, 64 bits. Built 20150612.",
            category="Linux OS",
            icon_url="http://icons.example.com/ubuntu.png",
            disk_format=DiskFormat.VMDK_STREAM_OPTIMIZED,
            disk_size=913,
            cpu=None,
            ram_mb=None,
        ),
        CatalogueEntry(
            ovf_url="http://mirror.example.org/tiny/tiny.ovf",
            name="Tiny Router",
            description="A tiny router",
            category="Networking",
            # Relative icons resolve like OVFFile: against the RepositoryURI.
            icon_url="http://repository.example.com/abiquo/icons/tiny.png",
            disk_format=DiskFormat.QCOW2_SPARSE,
            disk_size=None,
            cpu=None,
            ram_mb=None,
        ),
        CatalogueEntry(
            # The entry's own RepositoryURI, a directory.
            ovf_url="https://other.example.net/templates/windows/w2k12.ovf",
            name="Windows 2012",
            description="Windows Server 2012 R2 evaluation",
            category="",
            icon_url="",  # not a web URL: dropped
            disk_format=DiskFormat.UNKNOWN,  # an unknown name, as Abiquo read it
            disk_size=None,
            cpu=None,
            ram_mb=None,
        ),
        CatalogueEntry(
            ovf_url="http://repository.example.com/alpine/alpine.ovf",
            name="alpine",  # no Product: the file's name
            description="",
            category="",
            icon_url="",
            disk_format=None,
            disk_size=64,
            cpu=None,
            ram_mb=None,
        ),
    ]
    assert entries[0].disk_size_bytes == 913 * 1024**2
    assert entries[1].disk_size_bytes is None


def test_an_empty_catalogue_is_valid() -> None:
    document = (
        b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        b'<ns2:RepositorySpace xmlns:ns1="http://schemas.dmtf.org/ovf/envelope/1" '
        b'xmlns:ns2="http://www.abiquo.com/appliancemanager/repositoryspace" '
        b'ns2:RepositoryName="Abiquo Remote Repository" ns2:RepositoryURI="http://localhost"/>'
    )
    assert parse_catalogue(document, base_url=BASE) == ("Abiquo Remote Repository", [])


def _index(description_attrs: str, root_attrs: str = "", body: str = "") -> bytes:
    return (
        f'<rs:RepositorySpace xmlns:rs="{RS_NS}" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"'
        f' rs:RepositoryName="r" {root_attrs}>'
        f"<rs:OVFDescription {description_attrs}>{body}</rs:OVFDescription>"
        "</rs:RepositorySpace>"
    ).encode()


@pytest.mark.parametrize(
    ("root_uri", "entry_uri", "ovf_file", "expected"),
    [
        # No RepositoryURI: the catalogue's own URL.
        ("", "", "a/a.ovf", "http://repository.example.com/abiquo/a/a.ovf"),
        ("", "", "/a/a.ovf", "http://repository.example.com/a/a.ovf"),
        ("", "", "../a.ovf", "http://repository.example.com/a.ovf"),
        # A RepositoryURI naming a document, a directory, a host, a relative one.
        ("http://h.example/x/ovfindex.xml", "", "a.ovf", "http://h.example/x/a.ovf"),
        ("http://h.example/x", "", "a.ovf", "http://h.example/x/a.ovf"),
        ("http://h.example/x/", "", "a.ovf", "http://h.example/x/a.ovf"),
        ("http://h.example", "", "a.ovf", "http://h.example/a.ovf"),
        ("mirror", "", "a.ovf", "http://repository.example.com/abiquo/mirror/a.ovf"),
        # An entry's RepositoryURI wins over the catalogue's.
        ("http://h.example/x/", "https://e.example/y/", "a.ovf", "https://e.example/y/a.ovf"),
        # An absolute OVFFile is what it says.
        ("http://h.example/x/", "", "https://z.example/a.ovf", "https://z.example/a.ovf"),
        # Spaces and non-ASCII are percent-encoded.
        (
            "",
            "",
            "my template/ñ.ovf",
            "http://repository.example.com/abiquo/my%20template/%C3%B1.ovf",
        ),
    ],
)
def test_ovf_urls(root_uri: str, entry_uri: str, ovf_file: str, expected: str) -> None:
    root_attrs = f'rs:RepositoryURI="{root_uri}"' if root_uri else ""
    entry_attrs = f'rs:RepositoryURI="{entry_uri}"' if entry_uri else ""
    document = _index(f'rs:OVFFile="{ovf_file}" {entry_attrs}', root_attrs)
    _, [entry] = parse_catalogue(document, base_url=BASE)
    assert entry.ovf_url == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("VMDK_FLAT", DiskFormat.VMDK_FLAT),
        ("vhd_sparse", DiskFormat.VHD_SPARSE),
        ("STREAM_OPTIMIZED", DiskFormat.VMDK_STREAM_OPTIMIZED),
        ("UNKNOWN", DiskFormat.UNKNOWN),
        ("KVM", DiskFormat.UNKNOWN),
        ("http://www.vmware.com/specifications/vmdk.html#sparse", DiskFormat.VMDK_SPARSE),
        ("http://example.com/what", DiskFormat.UNKNOWN),
        ("", None),
    ],
)
def test_disk_formats(value: str, expected: DiskFormat | None) -> None:
    _, [entry] = parse_catalogue(
        _index(f'rs:OVFFile="a.ovf" rs:DiskFormat="{value}"'), base_url=BASE
    )
    assert entry.disk_format == expected


def test_unqualified_attributes_and_cpu_and_ram() -> None:
    document = (
        f'<RepositorySpace xmlns="{RS_NS}" RepositoryName="plain">'
        '<OVFDescription OVFFile="a.ovf" OVFCategories=" Databases , x" CPU="4" RAM="8192">'
        '<Product xmlns="http://schemas.dmtf.org/ovf/envelope/1">  PostgreSQL  </Product>'
        "</OVFDescription></RepositorySpace>"
    ).encode()
    name, [entry] = parse_catalogue(document, base_url=BASE)
    assert name == "plain"
    assert (entry.name, entry.category, entry.cpu, entry.ram_mb) == (
        "PostgreSQL",
        "Databases",
        4,
        8192,
    )


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE r [
  <!ENTITY a "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa">
  <!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
]>
<ns2:RepositorySpace xmlns:ns2="http://www.abiquo.com/appliancemanager/repositoryspace"
  ns2:RepositoryName="&b;"/>
"""
XXE = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY x SYSTEM "http://169.254.169.254/latest/meta-data/">]>
<ns2:RepositorySpace xmlns:ns2="http://www.abiquo.com/appliancemanager/repositoryspace"
  ns2:RepositoryName="&x;"/>
"""

REFUSED = [
    ("not xml", b"<html><body>404</body>", "not well-formed XML"),
    ("html", b"<html><body>Not found</body></html>", "not a catalogue"),
    ("an envelope", b'<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"/>', "not a"),
    ("billion laughs", BILLION_LAUGHS, "DTD or entities"),
    ("external entity", XXE, "DTD or entities"),
    ("no OVFFile", _index("", body="<ovf:Product>Lost</ovf:Product>"),
     "entry 1 ('Lost') has no OVFFile"),
    ("empty OVFFile", _index('rs:OVFFile="  "'), "entry 1 has no OVFFile"),
    ("ftp", _index('rs:OVFFile="ftp://h.example/a.ovf"'),
     "'ftp://h.example/a.ovf' does not resolve to an http(s) URL"),
    ("file", _index('rs:OVFFile="file:///etc/passwd"'), "does not resolve to an http(s) URL"),
    ("javascript", _index('rs:OVFFile="javascript:alert(1)"'), "does not resolve"),
    ("no host", _index('rs:OVFFile="https:///a.ovf"'), "does not resolve"),
    ("bad port", _index('rs:OVFFile="http://h.example:99999/a.ovf"'), "does not resolve"),
    ("bad IPv6", _index('rs:OVFFile="http://[::1/a.ovf"'), "does not resolve"),
    ("control character", _index('rs:OVFFile="a&#10;.ovf"'), "does not resolve"),
    ("file RepositoryURI", _index('rs:OVFFile="a.ovf"', 'rs:RepositoryURI="file:///srv/"'),
     "its RepositoryURI 'file:///srv/' is not an http(s) URL"),
    (
        "the same template twice",
        _index('rs:OVFFile="a.ovf"').replace(
            b"</rs:RepositorySpace>",
            b'<rs:OVFDescription rs:OVFFile="http://repository.example.com/abiquo/a.ovf"/>'
            b"</rs:RepositorySpace>",
        ),
        "entries 1 and 2 are both",
    ),
    ("size not a number", _index('rs:OVFFile="a.ovf" rs:DiskSize="1.5"'),
     "DiskSize '1.5' is not a whole number"),
    ("negative size", _index('rs:OVFFile="a.ovf" rs:DiskSize="-1"'), "is not a whole number"),
    ("absurd size", _index(f'rs:OVFFile="a.ovf" rs:DiskSize="{MAX_DISK_MB + 1}"'), "more than the"),
    ("huge number", _index('rs:OVFFile="a.ovf" rs:DiskSize="' + "9" * 5000 + '"'), "not a whole"),
    ("no CPUs", _index('rs:OVFFile="a.ovf" rs:CPU="0"'), "more than 0"),
    ("absurd RAM", _index('rs:OVFFile="a.ovf" rs:RAM="99999999999"'), "more than the"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("document", "message"), [(d, m) for _, d, m in REFUSED], ids=[i for i, _, _ in REFUSED]
)
def test_refused(document: bytes, message: str) -> None:
    with pytest.raises(CatalogueError, match=re.escape(message)) as e:
        parse_catalogue(document, base_url=BASE)
    assert e.value.code == "AM-CATALOGUE"


def test_too_big_and_bad_base_urls() -> None:
    with pytest.raises(CatalogueError, match=f"is {len(ABIQUO_INDEX)} bytes; at most 100 are"):
        parse_catalogue(ABIQUO_INDEX, base_url=BASE, max_bytes=100)
    for base in ("file:///srv/ovfindex.xml", "ovfindex.xml", "", "http://"):
        with pytest.raises(CatalogueError, match="is not an http"):
            parse_catalogue(ABIQUO_INDEX, base_url=base)


# -- writing --------------------------------------------------------------------------


def test_what_is_read_is_written_back() -> None:
    name, entries = parse_catalogue(ABIQUO_INDEX, base_url=BASE)
    document = render_catalogue(name, entries, repository_uri="http://elsewhere.example/")
    assert parse_catalogue(document, base_url="http://anywhere.example/") == (name, entries)
    assert b'ns2:RepositoryURI="http://elsewhere.example/"' in document


def test_render_refuses_what_it_could_not_read_back() -> None:
    good = CatalogueEntry("http://h.example/a.ovf", "a", "", "", "", None, None, None, None)
    with pytest.raises(CatalogueError, match="has a comma"):
        render_catalogue("r", [good.__class__(**{**good.__dict__, "category": "a,b"})])
    with pytest.raises(CatalogueError, match="does not resolve to an http"):
        render_catalogue("r", [good.__class__(**{**good.__dict__, "ovf_url": "ftp://h/a.ovf"})])
    with pytest.raises(CatalogueError, match="must be absolute"):
        render_catalogue("r", [good.__class__(**{**good.__dict__, "ovf_url": "a.ovf"})])
    with pytest.raises(CatalogueError, match="must be absolute"):
        render_catalogue("r", [good.__class__(**{**good.__dict__, "icon_url": "i.png"})])
    with pytest.raises(CatalogueError, match="has no name"):
        render_catalogue("r", [good.__class__(**{**good.__dict__, "name": " "})])
    with pytest.raises(CatalogueError, match="XML cannot carry"):
        render_catalogue("r\x00", [good])
    with pytest.raises(CatalogueError, match="more than 0"):
        render_catalogue("r", [good.__class__(**{**good.__dict__, "cpu": 0})])


_text = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufffe\uffff"),
    max_size=30,
).map(str.strip)
_segment = st.text(string.ascii_letters + string.digits + "-_.~", min_size=1, max_size=12)


@st.composite
def catalogue_entries(draw: st.DrawFn) -> list[CatalogueEntry]:
    urls = draw(
        st.lists(
            st.builds(
                "{}://{}.example/{}.ovf".format,
                st.sampled_from(["http", "https"]),
                st.text(string.ascii_lowercase, min_size=1, max_size=10),
                st.lists(_segment, min_size=1, max_size=3).map("/".join),
            ),
            max_size=5,
            unique=True,
        )
    )
    return [
        CatalogueEntry(
            ovf_url=url,
            name=draw(_text.filter(bool)),
            description=draw(_text),
            category=draw(_text.filter(lambda c: "," not in c).map(str.strip)),
            icon_url=draw(st.sampled_from(["", "https://icons.example/x.png"])),
            disk_format=draw(st.none() | st.sampled_from(DiskFormat)),
            disk_size=draw(st.none() | st.integers(0, MAX_DISK_MB)),
            cpu=draw(st.none() | st.integers(1, 4096)),
            ram_mb=draw(st.none() | st.integers(1, 16 * 1024**2)),
        )
        for url in urls
    ]


@settings(FUZZ, max_examples=150)
@given(_text, catalogue_entries())
def test_round_trip(name: str, entries: list[CatalogueEntry]) -> None:
    document = render_catalogue(name, entries)
    assert parse_catalogue(document, base_url=BASE) == (name, entries)


# -- fuzzing --------------------------------------------------------------------------


def _parse(data: bytes) -> object:
    return parse_catalogue(data, base_url=BASE)


_TAGS = ["OVFDescription", "RepositorySpace"]
_ATTRS = [
    "RepositoryName", "RepositoryURI", "OVFFile", "OVFCategories", "DiskFormat", "DiskSize",
    "CPU", "RAM",
]  # fmt: skip


@FUZZ
@given(st.binary(max_size=2000))
def test_arbitrary_bytes(data: bytes) -> None:
    refuses_cleanly(_parse, data, CatalogueError)


@FUZZ
@given(st.text(max_size=500))
def test_arbitrary_text(text: str) -> None:
    refuses_cleanly(_parse, text.encode("utf-8", "surrogatepass"), CatalogueError)


@FUZZ_SHAPES
@given(xmlish(RS_NS, "RepositorySpace", _TAGS, _ATTRS))
def test_catalogue_shaped_nonsense(data: bytes) -> None:
    refuses_cleanly(_parse, data, CatalogueError)


@FUZZ
@given(st.just(ABIQUO_INDEX).flatmap(mutated))
def test_mutated_catalogues(data: bytes) -> None:
    refuses_cleanly(_parse, data, CatalogueError)
