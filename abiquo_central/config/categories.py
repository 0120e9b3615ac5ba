"""Template categories: the shelves of the appliance library.

One category is the default (Abiquo's "Others", made by migration 0006): templates
without a category are filed under it, so it can be neither deleted nor renamed, and it
stays not erasable. Other categories are deleted only when erasable. Names are unique.
Every change records its event in its own transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from sqlalchemy import ColumnElement, Row, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from abiquo_central.db import tables
from abiquo_central.db.paging import Page, PageRequest, fetch_page
from abiquo_central.db.rows import inserted_id, taken
from abiquo_central.events import Action, Actor, Component, record_action
from abiquo_runtime.errors import Conflict, InvalidInput, NotFound

CATEGORY_NOT_FOUND = "CATEGORY-0"
DUPLICATED_NAME = "CATEGORY-1"
NOT_ERASABLE = "CATEGORY-2"
DEFAULT_CATEGORY = "CATEGORY-3"
INVALID_NAME = "CATEGORY-4"

# The column's length.
NAME_MAX = 128

_cat = tables.category

SORTABLE: Mapping[str, ColumnElement[Any]] = MappingProxyType(
    {"id": _cat.c.id, "name": _cat.c.name}
)


@dataclass(frozen=True, slots=True)
class CategorySpec:
    """What a caller sets on a category, creating or replacing it."""

    name: str
    erasable: bool = True


@dataclass(frozen=True, slots=True)
class Category:
    id: int
    name: str
    erasable: bool
    is_default: bool


def validate(spec: CategorySpec) -> CategorySpec:
    """`spec` with its name trimmed; InvalidInput otherwise."""
    name = spec.name.strip()
    if not name:
        raise InvalidInput("a category needs a name", code=INVALID_NAME)
    if len(name) > NAME_MAX:
        raise InvalidInput(
            f"a category's name has at most {NAME_MAX} characters", code=INVALID_NAME
        )
    return CategorySpec(name=name, erasable=spec.erasable)


def _category(row: Row[Any]) -> Category:
    return Category(
        id=row.id, name=row.name, erasable=bool(row.erasable), is_default=bool(row.is_default)
    )


def _not_found() -> NotFound:
    return NotFound("The requested category does not exist", code=CATEGORY_NOT_FOUND)


def _duplicated(name: str) -> Conflict:
    return Conflict(f"There is already a category named {name}", code=DUPLICATED_NAME)


async def list_categories(engine: AsyncEngine, *, page: PageRequest) -> Page[Category]:
    """A page of categories (`has` filters on the name)."""
    async with engine.connect() as conn:
        rows, total = await fetch_page(
            conn,
            select(_cat),
            page,
            sortable=SORTABLE,
            default_sort="name",
            tiebreaker=_cat.c.id,
            name=_cat.c.name,
        )
    return Page(items=[_category(r) for r in rows], total=total)


async def _get(conn: AsyncConnection, category_id: int) -> Category:
    row = (await conn.execute(select(_cat).where(_cat.c.id == category_id))).one_or_none()
    if row is None:
        raise _not_found()
    return _category(row)


async def get_category(engine: AsyncEngine, category_id: int) -> Category:
    async with engine.connect() as conn:
        return await _get(conn, category_id)


async def default_category(engine: AsyncEngine) -> Category:
    """The category templates without one are filed under."""
    async with engine.connect() as conn:
        row = (
            await conn.execute(select(_cat).where(_cat.c.is_default.is_(True)).order_by(_cat.c.id))
        ).first()
    if row is None:
        raise _not_found()
    return _category(row)


async def _name_taken(conn: AsyncConnection, name: str, but: int | None = None) -> bool:
    return await taken(conn, _cat, _cat.c.name == name, but=but)


async def _record(
    conn: AsyncConnection, actor: Actor, action: Action, category_id: int, message: str
) -> None:
    await record_action(
        conn,
        actor,
        component=Component.APPLIANCE_MANAGER,
        action=action,
        target=f"/config/categories/{category_id}",
        message=message,
    )


async def create_category(engine: AsyncEngine, spec: CategorySpec, *, actor: Actor) -> Category:
    """A new category (never the default); Conflict when its name is taken."""
    spec = validate(spec)
    try:
        async with engine.begin() as conn:
            if await _name_taken(conn, spec.name):
                raise _duplicated(spec.name)
            category_id = inserted_id(
                await conn.execute(
                    _cat.insert().values(name=spec.name, erasable=spec.erasable, is_default=False)
                )
            )
            await _record(
                conn, actor, Action.CATEGORY_CREATE, category_id, f"Category {spec.name} created"
            )
    except IntegrityError:
        # Another request took the name between the check and the insert.
        raise _duplicated(spec.name) from None
    return Category(id=category_id, name=spec.name, erasable=spec.erasable, is_default=False)


async def update_category(
    engine: AsyncEngine, category_id: int, spec: CategorySpec, *, actor: Actor
) -> Category:
    """Rename a category or change whether it is erasable; the default one keeps its
    name and stays not erasable (Conflict)."""
    spec = validate(spec)
    try:
        async with engine.begin() as conn:
            found = await _get(conn, category_id)
            if found.is_default and (spec.name != found.name or spec.erasable):
                raise Conflict(
                    f"{found.name} is the default category: it keeps its name and cannot "
                    "become erasable",
                    code=DEFAULT_CATEGORY,
                )
            if await _name_taken(conn, spec.name, but=category_id):
                raise _duplicated(spec.name)
            await conn.execute(
                _cat.update()
                .where(_cat.c.id == category_id)
                .values(name=spec.name, erasable=spec.erasable)
            )
            await _record(
                conn, actor, Action.CATEGORY_MODIFY, category_id, f"Category {spec.name} modified"
            )
    except IntegrityError:
        raise _duplicated(spec.name) from None
    return Category(
        id=category_id, name=spec.name, erasable=spec.erasable, is_default=found.is_default
    )


async def delete_category(engine: AsyncEngine, category_id: int, *, actor: Actor) -> None:
    """Remove an erasable category (Conflict for the default one and the not erasable)."""
    async with engine.begin() as conn:
        found = await _get(conn, category_id)
        if found.is_default:
            raise Conflict(
                f"{found.name} is the default category: it cannot be deleted",
                code=DEFAULT_CATEGORY,
            )
        if not found.erasable:
            raise Conflict(f"Category {found.name} is not erasable", code=NOT_ERASABLE)
        await conn.execute(_cat.delete().where(_cat.c.id == category_id))
        await _record(
            conn, actor, Action.CATEGORY_DELETE, category_id, f"Category {found.name} deleted"
        )
