"""The correlation id of each request: the client's X-Correlation-ID, or a new one.

It is bound for everything the request does (logs, messages it sends) and echoed in the
response's X-Correlation-ID header.
"""

from __future__ import annotations

import re

from aiohttp import web
from aiohttp.typedefs import Handler

from abiquo_central.api.keys import CORRELATION_ID
from abiquo_runtime.correlation import correlation

HEADER = "X-Correlation-ID"
# A client's id is kept only when it is a plain token: it goes into logs and headers.
_ACCEPTABLE = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


@web.middleware
async def correlation_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    given = request.headers.get(HEADER)
    if given is not None and not _ACCEPTABLE.match(given):
        given = None
    with correlation(given) as correlation_id:
        request[CORRELATION_ID] = correlation_id
        return await handler(request)


async def echo_correlation_id(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every response of the API carries the id, streamed ones too."""
    if CORRELATION_ID in request:
        response.headers[HEADER] = request[CORRELATION_ID]
