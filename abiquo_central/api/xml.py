"""XML rendering and parsing of the representation models.

The rules (API.md): the root element is the entity's XML name; each field is a child
element named as the field is in JSON, in declared order; a link is
`<link rel="" href="" type="" title=""/>`; a nested object or collection nests the same
way; a collection is `<datacenters><totalSize>N</totalSize><link/>...<datacenter>...`.
A None field is left out. Lists of scalars repeat the field's element.

Parsing walks the model's declared types (msgspec.inspect) to read the same shapes back,
then lets msgspec convert the text ("3", "true", ISO dates) into the declared types.
Untrusted XML is parsed with defusedxml: no DTDs, no entities.
"""

from __future__ import annotations

import datetime as dt
import enum
import typing
import uuid
from collections.abc import Mapping
from typing import Any, TypeVar
from xml.etree import ElementTree as ET

import defusedxml.ElementTree as SafeET
import msgspec
import msgspec.inspect as mi
from defusedxml import DefusedXmlException

from abiquo_central.api.media import VENDOR_PREFIX
from abiquo_central.api.model import Collection, Link

S = TypeVar("S", bound=msgspec.Struct)


class XmlError(ValueError):
    """The XML cannot be read as the expected representation."""


# -- rendering ---------------------------------------------------------------------


def item_xml_name(item: object) -> str:
    """The element an entity gets inside a collection: its own XML name."""
    media = getattr(type(item), "media", None)
    if media is None:
        raise TypeError(f"{type(item).__name__} has no media names: it cannot be listed")
    return str(media.one.xml)


def _xml_link_type(kind: str | None) -> str | None:
    # Links are built once with the JSON media type; an XML document points at XML.
    if kind is None or not kind.startswith(VENDOR_PREFIX):
        return kind
    base, sep, params = kind.partition(";")
    if base.rstrip().endswith("+json"):
        base = base.rstrip()[: -len("+json")] + "+xml"
    return f"{base}{sep}{params}"


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, dt.datetime | dt.date | dt.time | uuid.UUID):
        # The same text the JSON encoder writes (RFC 3339, "Z" for UTC).
        return str(msgspec.to_builtins(value))
    return str(value)


def _add_links(parent: ET.Element, links: list[Link]) -> None:
    for link in links:
        attrs = {"rel": link.rel, "href": link.href}
        kind = _xml_link_type(link.type)
        if kind is not None:
            attrs["type"] = kind
        if link.title is not None:
            attrs["title"] = link.title
        ET.SubElement(parent, "link", attrs)


def _fill_collection(element: ET.Element, collection: Collection[Any]) -> None:
    if collection.total_size is not None:
        ET.SubElement(element, "totalSize").text = str(collection.total_size)
    _add_links(element, collection.links)
    for item in collection.collection:
        _fill(ET.SubElement(element, item_xml_name(item)), item)


def _fill(element: ET.Element, struct: msgspec.Struct) -> None:
    if isinstance(struct, Collection):
        _fill_collection(element, struct)
        return
    for attr, name in zip(struct.__struct_fields__, struct.__struct_encode_fields__, strict=True):
        _add(element, name, getattr(struct, attr))


def _add(parent: ET.Element, name: str, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, Link):
        _add_links(parent, [value])
    elif isinstance(value, msgspec.Struct):
        _fill(ET.SubElement(parent, name), value)
    elif isinstance(value, list | tuple | set | frozenset):
        if name == "links":
            _add_links(parent, list(value))
        else:
            for item in value:
                _add(parent, name, item)
    elif isinstance(value, Mapping):
        child = ET.SubElement(parent, name)
        for key, item in value.items():
            _add(child, str(key), item)
    else:
        ET.SubElement(parent, name).text = _text(value)


def encode_xml(value: msgspec.Struct, *, root: str) -> bytes:
    """`value` (an entity, or a collection of them) as an XML document under `root`."""
    element = ET.Element(root)
    _fill(element, value)
    return typing.cast(bytes, ET.tostring(element, encoding="utf-8", xml_declaration=True))


# -- parsing -----------------------------------------------------------------------


def _is_collection(t: mi.StructType) -> bool:
    return t.cls is Collection or typing.get_origin(t.cls) is Collection


def _is_link_list(t: mi.Type) -> bool:
    return (
        isinstance(t, mi.ListType)
        and isinstance(t.item_type, mi.StructType)
        and t.item_type.cls is Link
    )


def _optional(t: mi.Type) -> mi.Type:
    # `X | None` reads as X: a missing element is what makes it None.
    if isinstance(t, mi.UnionType):
        others = [m for m in t.types if not isinstance(m, mi.NoneType)]
        if len(others) == 1:
            return others[0]
    return t


def _links(element: ET.Element) -> list[dict[str, str]]:
    return [dict(child.attrib) for child in element if child.tag == "link"]


def _read(element: ET.Element, t: mi.Type) -> Any:
    t = _optional(t)
    if isinstance(t, mi.StructType):
        if _is_collection(t):
            return _read_collection(element, t)
        return _read_struct(element, t)
    if isinstance(t, mi.DictType):
        return {child.tag: _read(child, t.value_type) for child in element}
    if isinstance(t, mi.StrType):
        return element.text or ""
    text = (element.text or "").strip()
    # An empty element of a non-text type is no value at all.
    return text if text else None


def _read_struct(element: ET.Element, t: mi.StructType) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for field in t.fields:
        if _is_link_list(field.type):
            data[field.encode_name] = _links(element)
            continue
        children = element.findall(field.encode_name)
        if not children:
            continue
        kind = _optional(field.type)
        if isinstance(kind, mi.ListType | mi.SetType | mi.FrozenSetType | mi.VarTupleType):
            data[field.encode_name] = [_read(child, kind.item_type) for child in children]
        else:
            data[field.encode_name] = _read(children[0], field.type)
    return data


def _read_collection(element: ET.Element, t: mi.StructType) -> dict[str, Any]:
    fields = {f.name: f for f in t.fields}
    items = _optional(fields["collection"].type)
    item_type = items.item_type if isinstance(items, mi.ListType) else mi.AnyType()
    data: dict[str, Any] = {
        "links": _links(element),
        "collection": [
            _read(child, item_type) for child in element if child.tag not in ("link", "totalSize")
        ],
    }
    total = element.find("totalSize")
    if total is not None and (total.text or "").strip():
        data["totalSize"] = total.text
    return data


def decode_xml(body: bytes, model: type[S], *, root: str) -> S:
    """Parse `body` as the XML representation of `model` (a Struct type) under `root`.

    Raises XmlError for XML that is malformed, forbidden (DTDs, entities), or does not
    fit the model; the message says which.
    """
    try:
        element = SafeET.fromstring(body, forbid_dtd=True)
    except (ET.ParseError, DefusedXmlException) as exc:
        raise XmlError(f"the body is not acceptable XML: {exc}") from exc
    if element.tag != root:
        raise XmlError(f"expected a <{root}> document, not <{element.tag}>")
    data = _read(element, mi.type_info(model))
    try:
        return msgspec.convert(data, model, strict=False)
    except msgspec.ValidationError as exc:
        raise XmlError(str(exc)) from exc
