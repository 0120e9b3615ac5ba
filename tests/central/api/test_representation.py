"""Rendering models to JSON and XML and parsing them back: one model, both formats."""

from __future__ import annotations

from datetime import UTC, datetime
from xml.etree import ElementTree as ET

import msgspec
import pytest

from abiquo_central.api.body import decode
from abiquo_central.api.errors import ERRORS, ErrorItem, encode_errors
from abiquo_central.api.media import Format, Media
from abiquo_central.api.model import Collection, Entity, Link, Value
from abiquo_central.api.render import encode
from abiquo_central.api.resources.datacenters import Datacenter, RemoteService
from abiquo_central.api.xml import XmlError, decode_xml, encode_xml
from abiquo_runtime.errors import InvalidInput


class Network(Value):
    name: str
    address: str
    mask: int


class VirtualDatacenter(Entity, kw_only=True):
    media = Media.of("virtualdatacenter", xml="virtualDatacenter")

    id: int | None = None
    name: str
    hypervisor_type: str = "KVM"
    network: Network | None = None
    tags: list[str] = []
    cpu_soft: int = 0
    enabled: bool = True
    created: datetime | None = None


WHEN = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def _datacenter() -> Datacenter:
    return Datacenter(
        id=7,
        uuid="8f2a-uuid",
        name="Barcelona & <Co>",
        location="BCN",
        remote_services=Collection(
            collection=[
                RemoteService(
                    type="VIRTUAL_FACTORY", uri="http://dc:8009/virtualfactory", status=1
                ),
                RemoteService(type="APPLIANCE_MANAGER", uri="http://dc:8009/am", status=0),
            ]
        ),
        available=True,
        last_heartbeat=WHEN,
        links=[
            Link(
                rel="edit",
                href="http://h/api/admin/datacenters/7",
                type="application/vnd.abiquo.datacenter+json",
                title="Barcelona",
            ),
            Link(rel="racks", href="http://h/api/admin/datacenters/7/racks"),
        ],
    )


def test_entity_as_json() -> None:
    body = msgspec.json.decode(encode(_datacenter(), Datacenter.media.one, Format.JSON))
    assert body == {
        "links": [
            {
                "rel": "edit",
                "href": "http://h/api/admin/datacenters/7",
                "type": "application/vnd.abiquo.datacenter+json",
                "title": "Barcelona",
            },
            {"rel": "racks", "href": "http://h/api/admin/datacenters/7/racks"},
        ],
        "id": 7,
        "uuid": "8f2a-uuid",
        "name": "Barcelona & <Co>",
        "location": "BCN",
        "remoteServices": {
            "collection": [
                {
                    "links": [],
                    "id": None,
                    "type": "VIRTUAL_FACTORY",
                    "uri": "http://dc:8009/virtualfactory",
                    "status": 1,
                },
                {
                    "links": [],
                    "id": None,
                    "type": "APPLIANCE_MANAGER",
                    "uri": "http://dc:8009/am",
                    "status": 0,
                },
            ]
        },
        "available": True,
        "lastHeartbeat": "2025-01-02T03:04:05Z",
    }


def test_entity_as_xml_nests_collections_and_rewrites_link_types() -> None:
    root = ET.fromstring(encode(_datacenter(), Datacenter.media.one, Format.XML))
    assert root.tag == "datacenter"
    assert [child.tag for child in root] == [
        "link",
        "link",
        "id",
        "uuid",
        "name",
        "location",
        "remoteServices",
        "available",
        "lastHeartbeat",
    ]
    edit, racks = root.findall("link")
    assert edit.attrib == {
        "rel": "edit",
        "href": "http://h/api/admin/datacenters/7",
        "type": "application/vnd.abiquo.datacenter+xml",
        "title": "Barcelona",
    }
    assert racks.attrib == {"rel": "racks", "href": "http://h/api/admin/datacenters/7/racks"}
    assert root.findtext("name") == "Barcelona & <Co>"
    assert root.findtext("available") == "true"
    assert root.findtext("lastHeartbeat") == "2025-01-02T03:04:05Z"
    services = root.find("remoteServices")
    assert services is not None
    assert [s.tag for s in services] == ["remoteService", "remoteService"]
    assert [s.findtext("type") for s in services] == ["VIRTUAL_FACTORY", "APPLIANCE_MANAGER"]
    assert services[0].findtext("status") == "1"


def test_none_fields_are_null_in_json_and_absent_in_xml() -> None:
    dc = Datacenter(name="new")
    as_json = msgspec.json.decode(encode(dc, Datacenter.media.one, Format.JSON))
    assert as_json["id"] is None
    # An empty nested collection is still a collection.
    assert as_json["remoteServices"] == {"collection": []}
    root = ET.fromstring(encode(dc, Datacenter.media.one, Format.XML))
    assert root.find("id") is None
    assert root.find("lastHeartbeat") is None
    assert root.find("remoteServices") is not None


def test_xml_element_names_come_from_the_model() -> None:
    vdc = VirtualDatacenter(
        id=1,
        name="web",
        network=Network(name="default", address="192.168.0.0", mask=24),
        tags=["a", "b"],
        cpu_soft=4,
        created=WHEN,
    )
    root = ET.fromstring(encode(vdc, VirtualDatacenter.media.one, Format.XML))
    assert root.tag == "virtualDatacenter"
    assert root.findtext("hypervisorType") == "KVM"
    assert root.findtext("cpuSoft") == "4"
    assert root.findtext("network/address") == "192.168.0.0"
    assert [t.text for t in root.findall("tags")] == ["a", "b"]
    listing = Collection[VirtualDatacenter](collection=[vdc], total_size=1)
    root = ET.fromstring(encode(listing, VirtualDatacenter.media.many, Format.XML))
    assert root.tag == "virtualDatacenters"
    assert [c.tag for c in root] == ["totalSize", "virtualDatacenter"]


def test_collection_with_paging_links() -> None:
    links = [
        Link(
            rel="first",
            href="http://h/api/x?startwith=0",
            type="application/vnd.abiquo.datacenters+json",
        ),
        Link(
            rel="next",
            href="http://h/api/x?startwith=1",
            type="application/vnd.abiquo.datacenters+json",
        ),
    ]
    page = Collection[Datacenter](collection=[_datacenter()], total_size=12, links=links)
    body = msgspec.json.decode(encode(page, Datacenter.media.many, Format.JSON))
    assert list(body) == ["collection", "totalSize", "links"]
    assert body["totalSize"] == 12
    assert [link["rel"] for link in body["links"]] == ["first", "next"]
    assert body["collection"][0]["name"] == "Barcelona & <Co>"

    root = ET.fromstring(encode(page, Datacenter.media.many, Format.XML))
    assert root.tag == "datacenters"
    assert [c.tag for c in root] == ["totalSize", "link", "link", "datacenter"]
    assert root.findtext("totalSize") == "12"
    assert root.findall("link")[1].attrib["type"] == "application/vnd.abiquo.datacenters+xml"
    assert root.findtext("datacenter/remoteServices/remoteService/type") == "VIRTUAL_FACTORY"


def test_errors_in_both_formats() -> None:
    items = [ErrorItem(code="DC-0", message="The requested datacenter does not exist")]
    assert msgspec.json.decode(encode_errors(items, Format.JSON)) == {
        "collection": [{"code": "DC-0", "message": "The requested datacenter does not exist"}]
    }
    root = ET.fromstring(encode_errors(items, Format.XML))
    assert ERRORS.xml == root.tag == "errors"
    assert [c.tag for c in root] == ["error"]
    assert [c.tag for c in root[0]] == ["code", "message"]
    assert root.findtext("error/code") == "DC-0"


@pytest.mark.parametrize("fmt", [Format.JSON, Format.XML])
def test_what_is_rendered_parses_back(fmt: Format) -> None:
    dc = _datacenter()
    parsed = decode(encode(dc, Datacenter.media.one, fmt), Datacenter, Datacenter.media.one, fmt)
    if fmt is Format.XML:
        # An XML document's links point at XML representations.
        xml_links = [
            msgspec.structs.replace(link, type=link.type.replace("+json", "+xml"))
            if link.type
            else link
            for link in dc.links
        ]
        dc = msgspec.structs.replace(dc, links=xml_links)
    assert parsed == dc
    vdc = VirtualDatacenter(
        name="web", network=Network(name="n", address="10.0.0.0", mask=8), tags=["x"], created=WHEN
    )
    media = VirtualDatacenter.media.one
    assert decode(encode(vdc, media, fmt), VirtualDatacenter, media, fmt) == vdc


def test_parse_json_request_body_with_reference_links() -> None:
    body = b"""{"name": "web", "cpuSoft": 2,
                "links": [{"rel": "location", "href": "http://h/api/cloud/locations/1"}]}"""
    vdc = decode(body, VirtualDatacenter, VirtualDatacenter.media.one, Format.JSON)
    assert vdc.name == "web" and vdc.cpu_soft == 2 and vdc.id is None
    location = vdc.link("location")
    assert location is not None and location.href == "http://h/api/cloud/locations/1"
    assert vdc.link("enterprise") is None


def test_parse_xml_request_body() -> None:
    body = b"""<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
    <virtualDatacenter>
        <link rel="enterprise" href="http://h/api/admin/enterprises/2"/>
        <name>web</name>
        <cpuSoft>8</cpuSoft>
        <enabled>false</enabled>
        <network><name>n</name><address>10.0.0.0</address><mask>8</mask></network>
        <tags>a</tags><tags>b</tags>
        <created>2025-01-02T03:04:05Z</created>
        <somethingUnknown>ignored</somethingUnknown>
    </virtualDatacenter>"""
    vdc = decode_xml(body, VirtualDatacenter, root="virtualDatacenter")
    assert vdc == VirtualDatacenter(
        name="web",
        cpu_soft=8,
        enabled=False,
        network=Network(name="n", address="10.0.0.0", mask=8),
        tags=["a", "b"],
        created=WHEN,
        links=[Link(rel="enterprise", href="http://h/api/admin/enterprises/2")],
    )


def test_parse_xml_collection() -> None:
    body = b"""<datacenters><totalSize>2</totalSize><link rel="first" href="x"/>
        <datacenter><name>a</name></datacenter><datacenter><name>b</name><id>4</id></datacenter>
    </datacenters>"""
    parsed = decode_xml(body, Collection[Datacenter], root="datacenters")
    assert parsed.total_size == 2
    assert [d.name for d in parsed.collection] == ["a", "b"]
    assert parsed.collection[1].id == 4
    assert parsed.links == [Link(rel="first", href="x")]


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        (b"<datacenter><name>x</name>", "not acceptable XML"),
        (b"<rack><name>x</name></rack>", "expected a <datacenter> document"),
        (b"<datacenter><location>x</location></datacenter>", "missing required field `name`"),
        (b"<datacenter><name>x</name><id>seven</id></datacenter>", "$.id"),
        (
            b'<!DOCTYPE d [<!ENTITY e "boom">]><datacenter><name>&e;</name></datacenter>',
            "not acceptable XML",
        ),
    ],
)
def test_unreadable_xml_says_why(body: bytes, complaint: str) -> None:
    with pytest.raises(XmlError, match=None) as caught:
        decode_xml(body, Datacenter, root="datacenter")
    assert complaint in str(caught.value)


@pytest.mark.parametrize(
    ("body", "fmt"),
    [
        (b"", Format.JSON),
        (b"{not json", Format.JSON),
        (b'{"name": 3}', Format.JSON),
        (b"<datacenter>", Format.XML),
    ],
)
def test_unreadable_bodies_are_invalid_input(body: bytes, fmt: Format) -> None:
    with pytest.raises(InvalidInput):
        decode(body, Datacenter, Datacenter.media.one, fmt)


def test_encode_xml_refuses_items_without_names() -> None:
    class Anonymous(msgspec.Struct):
        x: int

    with pytest.raises(TypeError):
        encode_xml(Collection[Anonymous](collection=[Anonymous(x=1)]), root="things")
