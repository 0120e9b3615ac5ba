"""Small helpers over SQLAlchemy results."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, CursorResult, Table, Update, select
from sqlalchemy.ext.asyncio import AsyncConnection


def inserted_id(result: CursorResult[Any]) -> int:
    """The primary key a single-row INSERT generated."""
    key = result.inserted_primary_key
    if key is None or key[0] is None:
        raise RuntimeError("the insert reported no generated primary key")
    return int(key[0])


async def taken(
    conn: AsyncConnection, table: Table, *where: ColumnElement[bool], but: int | None = None
) -> bool:
    """Whether a row of `table` other than the one with id `but` meets `where`: a unique
    value (a name in its scope) already taken. Checked first so that the caller can say
    which value clashes; the unique key still decides between concurrent writers."""
    query = select(table.c.id).where(*where)
    if but is not None:
        query = query.where(table.c.id != but)
    return (await conn.execute(query.limit(1))).first() is not None


def by_primary_key(statement: Update) -> Update:
    """`statement` (an UPDATE of one row by its id, with conditions on other columns)
    made to find its row by the primary key on MariaDB and MySQL.

    On a small table the optimizer may pick the index of a condition's column (a VM's
    `state`) instead, and the next-key locks of that range scan take the index's gap
    where another transaction inserts its own row's new value: a claim on one machine
    then waits for an unrelated one to commit. By the primary key only the row is locked.
    """
    for dialect in ("mysql", "mariadb"):
        statement = statement.with_hint("USE INDEX (PRIMARY)", dialect_name=dialect)
    return statement
