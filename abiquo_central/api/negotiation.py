"""Choosing a response's representation from the request's Accept header."""

from __future__ import annotations

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from abiquo_central.api.endpoint import endpoint_of
from abiquo_central.api.errors import ApiError
from abiquo_central.api.keys import NEGOTIATED
from abiquo_central.api.media import Format, MediaName, Negotiated, negotiate


def negotiated(request: web.Request, media: MediaName) -> Negotiated:
    """The representation this request gets for `media`; ApiError 406 when none fits."""
    if NEGOTIATED in request:
        return request[NEGOTIATED]
    accept = request.headers.get(hdrs.ACCEPT)
    found = negotiate(accept, media)
    if found is None:
        raise ApiError(
            406,
            f"Cannot answer with {accept}; acceptable: "
            f"{media.content_type(Format.JSON)}, {media.content_type(Format.XML)}",
        )
    request[NEGOTIATED] = found
    return found


@web.middleware
async def negotiation_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    # Settled before the handler runs: a client that cannot read the answer gets its
    # 406 before anything is changed on its behalf.
    spec = endpoint_of(request)
    if spec is not None and spec.produces is not None:
        accept = request.headers.get(hdrs.ACCEPT)
        if spec.accepted is None or negotiate(accept, spec.accepted) is None:
            negotiated(request, spec.produces)
    return await handler(request)


def accepts(request: web.Request, media: MediaName) -> bool:
    """Whether the request's Accept header takes `media`."""
    return negotiate(request.headers.get(hdrs.ACCEPT), media) is not None
