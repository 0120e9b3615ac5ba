"""What each route declares about itself: who may call it and what it produces.

    @endpoint(produces=Datacenter.media.one, privileges=[PHYS_DC_ENUMERATE])
    async def get_datacenter(request: web.Request) -> web.Response: ...

The middlewares read the declaration of the route a request matched: auth.py checks
credentials (unless `public`) and privileges, negotiation.py picks the representation
(406 before the handler runs, so nothing is done for a client that cannot read it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web

from abiquo_central.api.media import MediaName

H = TypeVar("H", bound=Callable[..., Any])

_ATTRIBUTE = "__abiquo_endpoint__"


@dataclass(frozen=True, slots=True)
class Endpoint:
    # Served without credentials (GET /api/version).
    public: bool = False
    # Every one of these is required of the caller's role.
    privileges: frozenset[str] = frozenset()
    # The representation it answers with, if it answers with one.
    produces: MediaName | None = None


def endpoint(
    *,
    public: bool = False,
    privileges: Iterable[str] = (),
    produces: MediaName | None = None,
) -> Callable[[H], H]:
    """Declare a handler's access rule and representation (the handler is unchanged)."""
    spec = Endpoint(public=public, privileges=frozenset(privileges), produces=produces)

    def declare(handler: H) -> H:
        setattr(handler, _ATTRIBUTE, spec)
        return handler

    return declare


def endpoint_of(request: web.Request) -> Endpoint | None:
    """The declaration of the route `request` matched; None for undeclared routes and
    for requests that matched none (404, 405)."""
    if request.match_info.http_exception is not None:
        return None
    spec = getattr(request.match_info.handler, _ATTRIBUTE, None)
    return spec if isinstance(spec, Endpoint) else None
