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

from typing import TYPE_CHECKING

from aiohttp import web

from abiquo_dc.jsonhttp import answering, json_response

if TYPE_CHECKING:
    from abiquo_dc.bpm.service import BusinessProcessManager


def bpm_routes(bpm: BusinessProcessManager) -> list[web.RouteDef]:
    base = f"/{bpm.path}/conversions"

    async def listing(request: web.Request) -> web.Response:
        return json_response(bpm.conversions())

    async def one(request: web.Request) -> web.Response:
        return json_response(bpm.conversion(request.match_info["id"]))

    async def cancel(request: web.Request) -> web.Response:
        await bpm.cancel(request.match_info["id"])
        return web.Response(status=204)

    return [
        web.get(base, answering(listing)),
        web.get(f"{base}/{{id}}", answering(one)),
        web.delete(f"{base}/{{id}}", answering(cancel)),
    ]
