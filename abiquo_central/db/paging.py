"""One page of a listing: what the caller asked for and how a query answers it.

The HTTP layer parses `startwith`, `limit`, `by`, `asc` and `has` into a PageRequest;
domain functions turn it into SQL with `fetch_page`, naming the fields one may sort by.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, Row, Select, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from abiquo_runtime.errors import InvalidInput

T = TypeVar("T")

DEFAULT_LIMIT = 25


@dataclass(frozen=True, slots=True)
class PageRequest:
    startwith: int = 0
    limit: int = DEFAULT_LIMIT
    # A field name as the API shows it ("name", "id"); None sorts by the default field.
    by: str | None = None
    asc: bool = True
    # A substring the name must contain.
    has: str | None = None


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: Sequence[T]
    # How many match the filter on every page together.
    total: int


async def fetch_page(
    conn: AsyncConnection,
    query: Select[Any],
    page: PageRequest,
    *,
    sortable: Mapping[str, ColumnElement[Any]],
    default_sort: str,
    tiebreaker: ColumnElement[Any],
    name: ColumnElement[str] | None = None,
) -> tuple[Sequence[Row[Any]], int]:
    """The rows of `query` on `page` and the total across pages.

    `sortable` maps the API's field names to columns; an unknown `by` is the caller's
    mistake (InvalidInput). `tiebreaker` (a unique column) makes the order total, so
    that consecutive pages neither repeat nor skip rows that share a sort value.
    """
    sort_name = page.by if page.by is not None else default_sort
    column = sortable.get(sort_name)
    if column is None:
        known = ", ".join(sorted(sortable))
        raise InvalidInput(f"cannot sort by '{sort_name}'; sort by one of: {known}")
    if page.has and name is not None:
        query = query.where(name.contains(page.has, autoescape=True))
    total_query = select(func.count()).select_from(query.order_by(None).subquery())
    total = (await conn.execute(total_query)).scalar_one()
    order = (column.asc(), tiebreaker.asc()) if page.asc else (column.desc(), tiebreaker.desc())
    rows = (
        await conn.execute(query.order_by(*order).offset(page.startwith).limit(page.limit))
    ).all()
    return rows, int(total)
