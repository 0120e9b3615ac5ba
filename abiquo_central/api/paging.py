"""Listing parameters from the query string, and the links between pages."""

from __future__ import annotations

from aiohttp import web

from abiquo_central.api.links import base_url
from abiquo_central.api.media import Format, MediaName
from abiquo_central.api.model import Link
from abiquo_central.db.paging import DEFAULT_LIMIT, PageRequest
from abiquo_runtime.errors import InvalidInput

# No listing holds more rows than a 32-bit id counts: a larger offset is a mistake.
MAX_STARTWITH = 2**31 - 1


def _int(request: web.Request, name: str, default: int, *, least: int, most: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(f"'{name}' must be a whole number, not '{raw}'") from None
    if not least <= value <= most:
        raise InvalidInput(f"'{name}' must be between {least} and {most}")
    return value


def parse_page(request: web.Request, *, default_limit: int = DEFAULT_LIMIT) -> PageRequest:
    """startwith, limit, by, asc and has, validated (InvalidInput → 400).

    `by` is checked against the resource's sortable fields by the domain function.
    """
    asc_raw = request.query.get("asc", "true").strip().lower()
    if asc_raw not in ("true", "false"):
        raise InvalidInput(f"'asc' must be true or false, not '{asc_raw}'")
    by = request.query.get("by") or None
    has = request.query.get("has") or None
    return PageRequest(
        startwith=_int(request, "startwith", 0, least=0, most=MAX_STARTWITH),
        limit=_int(request, "limit", default_limit, least=1, most=MAX_STARTWITH),
        by=by,
        asc=asc_raw == "true",
        has=has,
    )


def page_links(request: web.Request, page: PageRequest, total: int, media: MediaName) -> list[Link]:
    """first, previous (unless on the first page), next (unless on the last), last.

    They keep the request's other parameters (by, asc, has, ...).
    """
    base = base_url(request)
    kind = media.content_type(Format.JSON)

    def at(rel: str, start: int) -> Link:
        url = request.rel_url.update_query(startwith=start, limit=page.limit)
        return Link(rel=rel, href=f"{base}{url}", type=kind)

    last_start = max(0, (total - 1) // page.limit * page.limit)
    links = [at("first", 0)]
    if page.startwith > 0:
        links.append(at("previous", max(0, page.startwith - page.limit)))
    if page.startwith + page.limit < total:
        links.append(at("next", page.startwith + page.limit))
    links.append(at("last", last_start))
    return links
