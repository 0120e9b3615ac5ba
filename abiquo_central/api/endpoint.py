"""What each route declares about itself: who may call it and what it produces.

    @endpoint(produces=Datacenter.media.one, privileges=[PHYS_DC_ENUMERATE])
    async def get_datacenter(request: web.Request) -> web.Response: ...

    @endpoint(
        produces=Rack.media.one,
        consumes=Rack,
        privileges=[PHYS_DC_MANAGE],
        query=[QueryParam("force", bool, "also when ...")],
    )
    async def update_rack(request: web.Request) -> web.Response: ...

The middlewares read the declaration of the route a request matched: auth.py checks
credentials (unless `public`) and privileges, negotiation.py picks the representation
(406 before the handler runs, so nothing is done for a client that cannot read it).
The OpenAPI document (openapi.py) is generated from the same declarations: `consumes`
is the model a request body is read as, `query` the parameters the handler reads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import web

from abiquo_central.api.media import MediaName

if TYPE_CHECKING:
    from abiquo_central.api.model import Entity

H = TypeVar("H", bound=Callable[..., Any])

_ATTRIBUTE = "__abiquo_endpoint__"


@dataclass(frozen=True, slots=True)
class QueryParam:
    """A query parameter a handler reads: its name, type (str, int, bool) and meaning."""

    name: str
    type: type = str
    description: str = ""
    required: bool = False


# What every paged listing reads (api/paging.py parses them).
PAGING: tuple[QueryParam, ...] = (
    QueryParam("startwith", int, "The offset of the first element of the page (from 0)"),
    QueryParam("limit", int, "How many elements a page holds (25 unless given)"),
    QueryParam("by", str, "The field to sort by"),
    QueryParam("asc", bool, "Ascending (true, the default) or descending order"),
    QueryParam("has", str, "Only the elements whose name contains this"),
)


@dataclass(frozen=True, slots=True)
class Endpoint:
    # Served without credentials (GET /api/version).
    public: bool = False
    # Every one of these is required of the caller's role.
    privileges: frozenset[str] = frozenset()
    # The representation it answers with, if it answers with one.
    produces: MediaName | None = None
    # What it answers a 202 with, when it may also start a task instead (a deployed VM's
    # reconfigure): a client may accept only that one.
    accepted: MediaName | None = None
    # The model its request body is read as, if it reads one.
    consumes: type[Entity] | None = None
    # The query parameters it reads.
    query: tuple[QueryParam, ...] = ()


def endpoint(
    *,
    public: bool = False,
    privileges: Iterable[str] = (),
    produces: MediaName | None = None,
    accepted: MediaName | None = None,
    consumes: type[Entity] | None = None,
    query: Iterable[QueryParam] = (),
) -> Callable[[H], H]:
    """Declare a handler's access rule, representations and parameters (the handler is
    unchanged)."""
    spec = Endpoint(
        public=public,
        privileges=frozenset(privileges),
        produces=produces,
        accepted=accepted,
        consumes=consumes,
        query=tuple(query),
    )

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
