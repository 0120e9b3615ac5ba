"""System properties: settings administrators change at run time, by name.

The set of properties is the platform's (migration 0006 writes them with their
defaults): administrators change values, never add or remove properties, and the
descriptions are the platform's own. A name is `<component>.<...>` (client.main.billingUrl
is the web console's), which is what listings filter on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from sqlalchemy import ColumnElement, Row, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from abiquo_central.db import tables
from abiquo_central.db.paging import Page, PageRequest, fetch_page
from abiquo_central.events import Action, Actor, Component, record_action
from abiquo_runtime.errors import InvalidInput, NotFound

PROPERTY_NOT_FOUND = "SYSPROP-0"
INVALID_VALUE = "SYSPROP-1"

# Longer values are refused: a property holds a URL, a number or a flag, not a document.
VALUE_MAX = 4096
# The name column's length.
NAME_MAX = 255

_prop = tables.system_property

SORTABLE: Mapping[str, ColumnElement[Any]] = MappingProxyType({"name": _prop.c.name})


@dataclass(frozen=True, slots=True)
class SystemProperty:
    name: str
    value: str
    description: str


def _property(row: Row[Any]) -> SystemProperty:
    return SystemProperty(name=row.name, value=row.value, description=row.description)


def _not_found(name: str) -> NotFound:
    return NotFound(f"There is no system property {name[:NAME_MAX]!r}", code=PROPERTY_NOT_FOUND)


def validate_value(value: str) -> str:
    """`value` when it fits; InvalidInput otherwise."""
    if len(value) > VALUE_MAX:
        raise InvalidInput(
            f"a system property's value has at most {VALUE_MAX} characters", code=INVALID_VALUE
        )
    if "\x00" in value:
        raise InvalidInput("a system property's value cannot hold NUL", code=INVALID_VALUE)
    return value


async def list_properties(
    engine: AsyncEngine, *, page: PageRequest, component: str | None = None
) -> Page[SystemProperty]:
    """A page of properties (`has` filters on the name), only `component`'s when given:
    those whose name starts with `<component>.`."""
    query = select(_prop)
    if component:
        query = query.where(_prop.c.name.startswith(f"{component}.", autoescape=True))
    async with engine.connect() as conn:
        rows, total = await fetch_page(
            conn,
            query,
            page,
            sortable=SORTABLE,
            default_sort="name",
            tiebreaker=_prop.c.name,
            name=_prop.c.name,
        )
    return Page(items=[_property(r) for r in rows], total=total)


async def _get(conn: AsyncConnection, name: str) -> SystemProperty:
    if len(name) > NAME_MAX:
        raise _not_found(name)
    row = (await conn.execute(select(_prop).where(_prop.c.name == name))).one_or_none()
    # MariaDB compares names regardless of case, SQLite does not: names are exact on both.
    if row is None or row.name != name:
        raise _not_found(name)
    return _property(row)


async def get_property(engine: AsyncEngine, name: str) -> SystemProperty:
    async with engine.connect() as conn:
        return await _get(conn, name)


async def set_property(
    engine: AsyncEngine, name: str, value: str, *, actor: Actor
) -> SystemProperty:
    """Change an existing property's value (NotFound for any other name)."""
    value = validate_value(value)
    async with engine.begin() as conn:
        found = await _get(conn, name)
        await conn.execute(_prop.update().where(_prop.c.name == found.name).values(value=value))
        await record_action(
            conn,
            actor,
            component=Component.PLATFORM,
            action=Action.SYSTEM_PROPERTY_MODIFY,
            target=f"/config/properties/{found.name}",
            message=f"System property {found.name} set to {value[:256]!r}",
        )
    return SystemProperty(name=found.name, value=value, description=found.description)
