"""Path parameters."""

from __future__ import annotations

from aiohttp import web

from abiquo_runtime.errors import NotFound

# Ids are database integers: a longer number names nothing (and must not reach a driver
# that would overflow on it).
MAX_ID = 2**31 - 1


def path_id(request: web.Request, name: str) -> int:
    """The numeric id in the path (routes match it with `{name:\\d+}`); 404 when too big."""
    value = int(request.match_info[name])
    if value > MAX_ID:
        raise NotFound(f"there is nothing with id {value}")
    return value
