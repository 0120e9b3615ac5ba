"""Abiquo media types and content negotiation, as pure functions over header values.

Each resource has a media-type name (`datacenter`) and an XML element name
(`datacenter`; `virtualDatacenter` for `virtualdatacenter`), and so has its collection.
A representation is `application/vnd.abiquo.<name>+json` or `+xml`, optionally with a
`version` parameter, which is echoed back.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

VENDOR_PREFIX = "application/vnd.abiquo."
_VERSION = re.compile(r"^[0-9]+(\.[0-9]+)*$")


class Format(enum.Enum):
    JSON = "json"
    XML = "xml"


@dataclass(frozen=True, slots=True)
class MediaName:
    """The names of one representation: `datacenter`, or the collection `datacenters`."""

    name: str
    xml: str

    def content_type(self, fmt: Format, version: str | None = None) -> str:
        base = f"{VENDOR_PREFIX}{self.name}+{fmt.value}"
        return f"{base}; version={version}" if version else base


@dataclass(frozen=True, slots=True)
class Media:
    """A resource's names, for one (`one`) and for its collection (`many`)."""

    one: MediaName
    many: MediaName

    @classmethod
    def of(
        cls,
        name: str,
        *,
        xml: str | None = None,
        plural: str | None = None,
        xml_plural: str | None = None,
    ) -> Media:
        """Names that default to Abiquo's rule: the XML name is the name, plurals add s."""
        xml = xml if xml is not None else name
        return cls(
            one=MediaName(name, xml),
            many=MediaName(
                plural if plural is not None else f"{name}s",
                xml_plural if xml_plural is not None else f"{xml}s",
            ),
        )


@dataclass(frozen=True, slots=True)
class Negotiated:
    """What a response is rendered as: the format, and the version the client asked for."""

    format: Format
    version: str | None = None


@dataclass(frozen=True, slots=True)
class _Accepted:
    type: str
    q: float
    version: str | None


def _parse_accept(header: str) -> list[_Accepted]:
    items: list[_Accepted] = []
    for part in header.split(","):
        kind, *params = (p.strip() for p in part.split(";"))
        kind = kind.lower()
        if "/" not in kind:
            continue
        q, version = 1.0, None
        for param in params:
            key, _, value = param.partition("=")
            key, value = key.strip().lower(), value.strip().strip('"')
            if key == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
            elif key == "version" and _VERSION.match(value):
                version = value
        if q > 0:
            items.append(_Accepted(kind, q, version))
    # Highest q first; the stable sort keeps the client's order among equals.
    items.sort(key=lambda a: -a.q)
    return items


def _format_for(kind: str, media: MediaName | None) -> Format | None:
    if media is not None:
        if kind == f"{VENDOR_PREFIX}{media.name}+json":
            return Format.JSON
        if kind == f"{VENDOR_PREFIX}{media.name}+xml":
            return Format.XML
    if kind == "application/json":
        return Format.JSON
    if kind in ("application/xml", "text/xml"):
        return Format.XML
    if kind in ("*/*", "application/*"):
        return Format.JSON
    return None


def negotiate(accept: str | None, media: MediaName) -> Negotiated | None:
    """How to render `media` for this Accept header; None when nothing acceptable (406)."""
    if not accept or not accept.strip():
        return Negotiated(Format.JSON)
    for item in _parse_accept(accept):
        fmt = _format_for(item.type, media)
        if fmt is not None:
            return Negotiated(fmt, item.version)
    return None


def error_format(accept: str | None) -> Negotiated:
    """How to render an error: XML when the client prefers any XML type, else JSON.

    An error is always rendered, even for a client that accepts neither (that is how it
    learns it got a 406).
    """
    for item in _parse_accept(accept or ""):
        if item.type.endswith("+xml") or item.type in ("application/xml", "text/xml"):
            return Negotiated(Format.XML, item.version)
        if item.type.endswith("+json") or _format_for(item.type, None) is Format.JSON:
            return Negotiated(Format.JSON, item.version)
    return Negotiated(Format.JSON)


def body_format(content_type: str, media: MediaName) -> Format | None:
    """The format of a request body declared as `content_type`; None when unsupported (415).

    `content_type` is the bare type (aiohttp's request.content_type): parameters such as
    version or charset are not part of the choice.
    """
    kind = content_type.strip().lower()
    if kind in ("*/*", "application/*"):
        return None
    return _format_for(kind, media)
