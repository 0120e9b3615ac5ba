"""Responses: a model rendered in the negotiated representation."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

import msgspec
from aiohttp import hdrs, web

from abiquo_central.api.links import Hrefs
from abiquo_central.api.media import Format, Media, MediaName
from abiquo_central.api.model import Collection, Entity
from abiquo_central.api.negotiation import negotiated
from abiquo_central.api.paging import page_links
from abiquo_central.api.xml import encode_xml
from abiquo_central.db.paging import Page, PageRequest

E = TypeVar("E", bound=Entity)
T = TypeVar("T")


def encode(value: msgspec.Struct, media: MediaName, fmt: Format) -> bytes:
    """`value` (an entity or a collection) as the bytes of its `fmt` representation."""
    if fmt is Format.XML:
        return encode_xml(value, root=media.xml)
    return msgspec.json.encode(value)


def _response(
    request: web.Request,
    value: msgspec.Struct,
    media: MediaName,
    status: int,
    headers: Mapping[str, str] | None,
) -> web.Response:
    chosen = negotiated(request, media)
    response = web.Response(
        status=status, body=encode(value, media, chosen.format), headers=dict(headers or {})
    )
    response.headers[hdrs.CONTENT_TYPE] = media.content_type(chosen.format, chosen.version)
    return response


def render(
    request: web.Request,
    entity: Entity,
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """One entity, as application/vnd.abiquo.<its name>+json or +xml."""
    return _response(request, entity, type(entity).media.one, status, headers)


def render_collection(
    request: web.Request,
    items: Sequence[E],
    *,
    media: Media,
    total: int | None = None,
    page: PageRequest | None = None,
    status: int = 200,
) -> web.Response:
    """A collection of `media`'s entities; with `page` and `total`, a page of a listing
    with its totalSize and first/previous/next/last links."""
    links = page_links(request, page, total, media.many) if page and total is not None else []
    value = Collection[E](collection=list(items), total_size=total, links=links)
    return _response(request, value, media.many, status, None)


def render_page(
    request: web.Request,
    found: Page[T],
    page: PageRequest,
    to_model: Callable[[T, Hrefs], E],
    *,
    media: Media,
) -> web.Response:
    """A page of a listing: each item of `found` as its model, with totalSize and links."""
    hrefs = Hrefs.of(request)
    return render_collection(
        request,
        [to_model(item, hrefs) for item in found.items],
        media=media,
        total=found.total,
        page=page,
    )
