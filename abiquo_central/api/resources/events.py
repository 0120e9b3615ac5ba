"""/api/events[/{id}]: the event log, newest first, filtered and paged.

Who sees what: EVENTLOG_VIEW_ALL sees every event; EVENTLOG_VIEW_ENTERPRISE only those
of the caller's own enterprise (another enterprise's event is 404, as if it did not
exist); a caller with neither is refused (403).
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from enum import StrEnum
from typing import TypeVar

from aiohttp import web

from abiquo_central import events as domain
from abiquo_central.api.auth import principal
from abiquo_central.api.endpoint import PAGING, QueryParam, endpoint
from abiquo_central.api.errors import FORBIDDEN, ApiError
from abiquo_central.api.keys import ENGINE
from abiquo_central.api.links import Hrefs
from abiquo_central.api.media import Media
from abiquo_central.api.model import Entity, Link
from abiquo_central.api.paging import parse_page
from abiquo_central.api.params import MAX_ID, path_id
from abiquo_central.api.render import render, render_page
from abiquo_central.tenants.privileges import EVENTLOG_VIEW_ALL, EVENTLOG_VIEW_ENTERPRISE
from abiquo_runtime.errors import InvalidInput

S = TypeVar("S", bound=StrEnum)


class Event(Entity, kw_only=True):
    media = Media.of("event")

    id: int
    timestamp: datetime
    severity: str
    component: str
    # Abiquo's EventType name (USER_LOGIN, VM_DEPLOY, ...).
    action_performed: str
    # The nick of the user who did it (for a failed login, the nick that was tried).
    performed_by: str | None = None
    id_user: int | None = None
    enterprise: str | None = None
    id_enterprise: int | None = None
    id_datacenter: int | None = None
    id_virtual_machine: int | None = None
    target: str = ""
    message: str = ""


def to_model(event: domain.Event, hrefs: Hrefs) -> Event:
    links: list[Link] = [hrefs.link("self", "events", event.id, media=Event.media.one)]
    if event.enterprise is not None and event.enterprise.id is not None:
        ent = ("admin", "enterprises", event.enterprise.id)
        links.append(hrefs.link("enterprise", *ent, title=event.enterprise.name))
        if event.user is not None and event.user.id is not None:
            links.append(hrefs.link("user", *ent, "users", event.user.id, title=event.user.name))
    if event.datacenter_id is not None:
        links.append(hrefs.link("datacenter", "admin", "datacenters", event.datacenter_id))
    return Event(
        id=event.id,
        timestamp=event.timestamp,
        severity=event.severity.value,
        component=event.component.value,
        action_performed=event.action.value,
        performed_by=event.user.name if event.user else None,
        id_user=event.user.id if event.user else None,
        enterprise=event.enterprise.name if event.enterprise else None,
        id_enterprise=event.enterprise.id if event.enterprise else None,
        id_datacenter=event.datacenter_id,
        id_virtual_machine=event.virtual_machine_id,
        target=event.target,
        message=event.message,
        links=links,
    )


def visible_to(request: web.Request) -> int | None:
    """The enterprise whose events alone the caller may see; None: every enterprise's.

    Either privilege lets one in, so the route declares neither and asks here.
    """
    caller = principal(request)
    if caller.holds(EVENTLOG_VIEW_ALL):
        return None
    if caller.holds(EVENTLOG_VIEW_ENTERPRISE):
        return caller.enterprise_id
    raise ApiError(
        403,
        "Access is denied: it needs the privilege "
        f"{EVENTLOG_VIEW_ENTERPRISE} or {EVENTLOG_VIEW_ALL}",
        code=FORBIDDEN,
    )


def _name(request: web.Request, param: str, names: type[S]) -> S | None:
    raw = request.query.get(param, "").strip()
    if not raw:
        return None
    try:
        return names(raw.upper())
    except ValueError:
        known = ", ".join(n.value for n in names)
        raise InvalidInput(f"'{param}' must be one of {known}, not '{raw}'") from None


def _id_or_name(request: web.Request, param: str) -> int | str | None:
    # Digits are an id, anything else a name: nicks and enterprise names that are all
    # digits are filtered by id, which is what a client that has the id sends anyway.
    raw = request.query.get(param, "").strip()
    if not raw:
        return None
    if raw.isdigit():
        return min(int(raw), MAX_ID + 1)
    return raw


def _instant(request: web.Request, param: str) -> datetime | None:
    """`datefrom`/`dateto`: milliseconds since the epoch, as Abiquo's clients send, or
    ISO 8601 (UTC when it names no zone)."""
    raw = request.query.get(param, "").strip()
    if not raw:
        return None
    try:
        if raw.lstrip("-").isdigit():
            return datetime.fromtimestamp(int(raw) / 1000, UTC)
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError):
        raise InvalidInput(
            f"'{param}' must be milliseconds since the epoch or an ISO 8601 date, not '{raw}'"
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def parse_filter(request: web.Request) -> domain.EventFilter:
    datacenter = request.query.get("datacenter", "").strip()
    if datacenter and not datacenter.isdigit():
        raise InvalidInput(f"'datacenter' must be a datacenter id, not '{datacenter}'")
    return domain.EventFilter(
        severity=_name(request, "severity", domain.Severity),
        component=_name(request, "component", domain.Component),
        action=_name(request, "action", domain.Action),
        user=_id_or_name(request, "user"),
        enterprise=_id_or_name(request, "enterprise"),
        datacenter_id=min(int(datacenter), MAX_ID + 1) if datacenter else None,
        date_from=_instant(request, "datefrom"),
        date_to=_instant(request, "dateto"),
    )


FILTERS: tuple[QueryParam, ...] = (
    QueryParam("severity", str, "Only events of this severity (NORMAL, INFO, ... CRITICAL)"),
    QueryParam("component", str, "Only events of this component (DATACENTER, USER, ...)"),
    QueryParam("action", str, "Only events of this action (VM_DEPLOY, USER_LOGIN, ...)"),
    QueryParam("user", str, "Only events of this user: its id or its nick"),
    QueryParam("enterprise", str, "Only events of this enterprise: its id or its name"),
    QueryParam("datacenter", int, "Only events of this datacenter (its id)"),
    QueryParam("datefrom", str, "From this instant: milliseconds since the epoch or ISO 8601"),
    QueryParam("dateto", str, "Up to this instant: milliseconds since the epoch or ISO 8601"),
)


@endpoint(produces=Event.media.many, query=(*PAGING, *FILTERS))
async def list_events(request: web.Request) -> web.Response:
    scope = visible_to(request)
    page = parse_page(request)
    # The log reads newest first unless the client asks for another order.
    if "asc" not in request.query:
        page = dataclasses.replace(page, asc=False)
    found = await domain.list_events(
        request.config_dict[ENGINE], page=page, where=parse_filter(request), visible_to=scope
    )
    return render_page(request, found, page, to_model, media=Event.media)


@endpoint(produces=Event.media.one)
async def get_event(request: web.Request) -> web.Response:
    scope = visible_to(request)
    event = await domain.get_event(
        request.config_dict[ENGINE], path_id(request, "id"), visible_to=scope
    )
    return render(request, to_model(event, Hrefs.of(request)))


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/events", list_events, name="events")
    router.add_get(r"/events/{id:\d+}", get_event, name="event")
