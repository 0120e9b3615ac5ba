"""Request bodies: JSON or XML, read into the same models responses are rendered from."""

from __future__ import annotations

from typing import TypeVar

import msgspec
from aiohttp import web

from abiquo_central.api.errors import ApiError
from abiquo_central.api.media import Format, MediaName, body_format
from abiquo_central.api.model import Collection, Entity
from abiquo_central.api.xml import XmlError, decode_xml
from abiquo_runtime.errors import InvalidInput

E = TypeVar("E", bound=Entity)
S = TypeVar("S", bound=msgspec.Struct)


def decode(body: bytes, model: type[S], media: MediaName, fmt: Format) -> S:
    """Parse `body` as `model`; InvalidInput (400) saying what is wrong when it does not fit."""
    if not body.strip():
        raise InvalidInput(f"the request needs a {media.name} body")
    if fmt is Format.XML:
        try:
            return decode_xml(body, model, root=media.xml)
        except XmlError as exc:
            raise InvalidInput(f"unreadable {media.name}: {exc}") from exc
    try:
        return msgspec.json.decode(body, type=model)
    except msgspec.DecodeError as exc:
        raise InvalidInput(f"unreadable {media.name}: {exc}") from exc


def _format(request: web.Request, media: MediaName) -> Format:
    fmt = body_format(request.content_type, media)
    if fmt is None:
        raise ApiError(
            415,
            f"Cannot read a body of type {request.content_type}; send "
            f"{media.content_type(Format.JSON)} or {media.content_type(Format.XML)}",
        )
    return fmt


async def read_entity(request: web.Request, model: type[E]) -> E:
    """The request's body as `model` (415 for a type it is not sent as, 400 if unreadable)."""
    media = model.media.one
    fmt = _format(request, media)
    return decode(await request.read(), model, media, fmt)


async def read_collection(request: web.Request, model: type[E]) -> list[E]:
    """The request's body as a collection of `model` (`<datacenters><datacenter>...`)."""
    media = model.media.many
    fmt = _format(request, media)
    return decode(await request.read(), Collection[model], media, fmt).collection  # type: ignore[valid-type]
