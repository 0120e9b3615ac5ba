"""Recording events and reading them back.

`record_event` takes a connection or an engine. A mutating call passes the connection
of its own transaction, so that its event is committed with its change or rolled back
with it: the log never shows what did not happen, nor misses what did. Given an engine,
the event is written in a transaction of its own (outcomes that have no transaction to
join: a login, a message from a datacenter).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from sqlalchemy import ColumnElement, Row, Select, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from abiquo_central.db import tables
from abiquo_central.db.paging import Page, PageRequest, fetch_page
from abiquo_central.db.rows import inserted_id
from abiquo_central.events.types import Action, Component, Severity
from abiquo_runtime.errors import NotFound

EVENT_NOT_FOUND = "EVENT-0"

_ev = tables.event

# The fields a listing may be sorted by, by their API names.
SORTABLE: Mapping[str, ColumnElement[Any]] = MappingProxyType(
    {
        "id": _ev.c.id,
        "timestamp": _ev.c.timestamp,
        "severity": _ev.c.severity,
        "component": _ev.c.component,
        "actionPerformed": _ev.c.action,
        "performedBy": _ev.c.user_name,
        "enterprise": _ev.c.enterprise_name,
    }
)
DEFAULT_SORT = "timestamp"


@dataclass(frozen=True, slots=True)
class Ref:
    """Who or what an event names: an id (None when there is none) and a name."""

    id: int | None
    name: str


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    timestamp: datetime
    severity: Severity
    component: Component
    action: Action
    user: Ref | None
    enterprise: Ref | None
    datacenter_id: int | None
    virtual_machine_id: int | None
    target: str
    message: str


@dataclass(frozen=True, slots=True)
class EventFilter:
    """What a listing keeps; every field left None keeps everything."""

    severity: Severity | None = None
    component: Component | None = None
    action: Action | None = None
    # A user or an enterprise by id (an int) or by name (a str).
    user: int | str | None = None
    enterprise: int | str | None = None
    datacenter_id: int | None = None
    # Inclusive bounds on the timestamp.
    date_from: datetime | None = None
    date_to: datetime | None = None


def _clip(value: str | None, column: ColumnElement[Any]) -> str | None:
    # Names can come from outside (the nick of a failed login is whatever was sent):
    # MariaDB in strict mode refuses a value longer than its column, and losing the
    # event to that would lose exactly the attempts worth seeing.
    length: int | None = getattr(column.type, "length", None)
    if value is None or length is None:
        return value
    return value[:length]


async def _insert(conn: AsyncConnection, values: dict[str, Any]) -> int:
    return inserted_id(await conn.execute(_ev.insert().values(**values)))


async def record_event(
    target_db: AsyncConnection | AsyncEngine,
    *,
    severity: Severity,
    component: Component,
    action: Action,
    user: Ref | None = None,
    enterprise: Ref | None = None,
    enterprise_of: int | None = None,
    target: str = "",
    message: str = "",
    datacenter_id: int | None = None,
    virtual_machine_id: int | None = None,
    now: datetime | None = None,
) -> int:
    """Write one event; its id. With a connection it joins that connection's transaction.

    `enterprise_of` names the enterprise by id alone: its name is read by the insert
    itself (a busy path saves the round trip of reading it first)."""
    values: dict[str, Any] = {
        "timestamp": now if now is not None else datetime.now(UTC),
        "severity": severity.value,
        "component": component.value,
        "action": action.value,
        "user_id": user.id if user else None,
        "user_name": _clip(user.name, _ev.c.user_name) if user else None,
        "enterprise_id": enterprise.id if enterprise else None,
        "enterprise_name": _clip(enterprise.name, _ev.c.enterprise_name) if enterprise else None,
        "datacenter_id": datacenter_id,
        "virtual_machine_id": virtual_machine_id,
        "target": _clip(target, _ev.c.target),
        "message": message,
    }
    if enterprise is None and enterprise_of is not None:
        ent = tables.enterprise
        values["enterprise_id"] = enterprise_of
        # Both columns hold 128 characters: nothing to clip.
        values["enterprise_name"] = (
            select(ent.c.name).where(ent.c.id == enterprise_of).scalar_subquery()
        )
    if isinstance(target_db, AsyncConnection):
        return await _insert(target_db, values)
    async with target_db.begin() as conn:
        return await _insert(conn, values)


@dataclass(frozen=True, slots=True)
class Actor:
    """Who makes a change, as the event log names them."""

    user_id: int
    nick: str
    enterprise_id: int


async def record_action(
    conn: AsyncConnection,
    actor: Actor,
    *,
    component: Component,
    action: Action,
    target: str,
    message: str,
    severity: Severity = Severity.INFO,
    datacenter_id: int | None = None,
) -> int:
    """Record, in `conn`'s transaction, a change `actor` made.

    The event is filed under the actor's enterprise, as every event is filed under the
    enterprise of whoever performed it; its name is read in the same transaction.
    """
    return await record_event(
        conn,
        severity=severity,
        component=component,
        action=action,
        user=Ref(actor.user_id, actor.nick),
        enterprise_of=actor.enterprise_id,
        target=target,
        message=message,
        datacenter_id=datacenter_id,
    )


async def record_login(
    engine: AsyncEngine,
    *,
    nick: str,
    user_id: int | None,
    enterprise_id: int | None,
    succeeded: bool,
) -> None:
    """A USER_LOGIN event: INFO when the credentials were good, WARNING when not.

    A failed attempt for a nick that names no user has neither user id nor enterprise:
    only those who see every enterprise's events see it.
    """
    async with engine.begin() as conn:
        enterprise: Ref | None = None
        if enterprise_id is not None:
            name = (
                await conn.execute(
                    select(tables.enterprise.c.name).where(tables.enterprise.c.id == enterprise_id)
                )
            ).scalar_one_or_none()
            enterprise = Ref(enterprise_id, name or "")
        await record_event(
            conn,
            severity=Severity.INFO if succeeded else Severity.WARNING,
            component=Component.USER,
            action=Action.USER_LOGIN,
            user=Ref(user_id, nick),
            enterprise=enterprise,
            target=nick,
            message=f"User {nick} logged in"
            if succeeded
            else f"User {nick} failed to log in: bad credentials or inactive user",
        )


def _event(row: Row[Any]) -> Event:
    return Event(
        id=row.id,
        timestamp=row.timestamp,
        severity=Severity(row.severity),
        component=Component(row.component),
        action=Action(row.action),
        user=Ref(row.user_id, row.user_name) if row.user_name is not None else None,
        enterprise=Ref(row.enterprise_id, row.enterprise_name or "")
        if row.enterprise_id is not None
        else None,
        datacenter_id=row.datacenter_id,
        virtual_machine_id=row.virtual_machine_id,
        target=row.target,
        message=row.message,
    )


def _by_id_or_name(
    query: Select[Any], value: int | str, id_column: ColumnElement[Any], name: ColumnElement[Any]
) -> Select[Any]:
    return query.where(id_column == value if isinstance(value, int) else name == value)


def _filtered(query: Select[Any], where: EventFilter, visible_to: int | None) -> Select[Any]:
    if visible_to is not None:
        query = query.where(_ev.c.enterprise_id == visible_to)
    if where.severity is not None:
        query = query.where(_ev.c.severity == where.severity.value)
    if where.component is not None:
        query = query.where(_ev.c.component == where.component.value)
    if where.action is not None:
        query = query.where(_ev.c.action == where.action.value)
    if where.user is not None:
        query = _by_id_or_name(query, where.user, _ev.c.user_id, _ev.c.user_name)
    if where.enterprise is not None:
        query = _by_id_or_name(query, where.enterprise, _ev.c.enterprise_id, _ev.c.enterprise_name)
    if where.datacenter_id is not None:
        query = query.where(_ev.c.datacenter_id == where.datacenter_id)
    if where.date_from is not None:
        query = query.where(_ev.c.timestamp >= where.date_from)
    if where.date_to is not None:
        query = query.where(_ev.c.timestamp <= where.date_to)
    return query


async def list_events(
    engine: AsyncEngine,
    *,
    page: PageRequest,
    where: EventFilter = EventFilter(),
    visible_to: int | None = None,
) -> Page[Event]:
    """A page of the events that match `where`.

    `visible_to` is the enterprise whose events alone the caller may see; None for a
    caller who sees every enterprise's (and those of none, such as failed logins).
    """
    query = _filtered(select(_ev), where, visible_to)
    async with engine.connect() as conn:
        rows, total = await fetch_page(
            conn,
            query,
            page,
            sortable=SORTABLE,
            default_sort=DEFAULT_SORT,
            tiebreaker=_ev.c.id,
            name=_ev.c.target,
        )
    return Page(items=[_event(r) for r in rows], total=total)


async def get_event(engine: AsyncEngine, event_id: int, *, visible_to: int | None = None) -> Event:
    """One event; NotFound also when it belongs to an enterprise the caller cannot see,
    so that nobody learns what other tenants did by probing ids."""
    query = _filtered(select(_ev).where(_ev.c.id == event_id), EventFilter(), visible_to)
    async with engine.connect() as conn:
        row = (await conn.execute(query)).one_or_none()
    if row is None:
        raise NotFound("The requested event does not exist", code=EVENT_NOT_FOUND)
    return _event(row)
