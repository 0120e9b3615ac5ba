"""The BPM's HTTP routes: its queue of conversions, seen and cancelled.

- `GET /bpm-async/conversions`: the running conversion and the waiting ones, in order,
  as a JSON list of `{"id", "state", "progress", "position", "source_path",
  "target_format", "requests", "retried", ...}`; `position` is 0 for the running one.
- `GET /bpm-async/conversions/{id}`: one, by the id of any request it answers; an ended
  one (kept a week with a journal) has `position` null and its `target_path` or `error`.
- `DELETE /bpm-async/conversions/{id}`: cancel that request (204). Its conversion stops
  when no other request awaits it: a waiting one leaves the queue, a running one is
  killed and its temporary files removed before the answer.

Errors are JSON `{"code", "message"}`: 404 no such conversion (BPM-NO-CONVERSION),
409 it has already ended (BPM-ENDED), 503 the BPM is not running (BPM-STOPPED).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import msgspec
from aiohttp import web

from abiquo_runtime.errors import AbiquoError, Conflict, InvalidInput, NotFound, TemporaryError

if TYPE_CHECKING:
    from abiquo_dc.bpm.service import BusinessProcessManager

Handler = Callable[[web.Request], Awaitable[web.Response]]

_JSON = "application/json"


def _status(exc: AbiquoError) -> int:
    if isinstance(exc, InvalidInput):
        return 400
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, Conflict):
        return 409
    if isinstance(exc, TemporaryError):
        return 503
    return 500


def _answering(handler: Handler) -> Handler:
    """The handler, with the errors of the taxonomy turned into JSON answers."""

    async def answer(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except AbiquoError as exc:
            body = msgspec.json.encode({"code": exc.code, "message": exc.message})
            return web.Response(status=_status(exc), body=body, content_type=_JSON)

    return answer


def _json(value: object) -> web.Response:
    return web.Response(body=msgspec.json.encode(value), content_type=_JSON)


def bpm_routes(bpm: BusinessProcessManager) -> list[web.RouteDef]:
    base = f"/{bpm.path}/conversions"

    async def listing(request: web.Request) -> web.Response:
        return _json(bpm.conversions())

    async def one(request: web.Request) -> web.Response:
        return _json(bpm.conversion(request.match_info["id"]))

    async def cancel(request: web.Request) -> web.Response:
        await bpm.cancel(request.match_info["id"])
        return web.Response(status=204)

    return [
        web.get(base, _answering(listing)),
        web.get(f"{base}/{{id}}", _answering(one)),
        web.delete(f"{base}/{{id}}", _answering(cancel)),
    ]
