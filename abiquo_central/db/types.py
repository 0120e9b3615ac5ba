"""Column types that behave the same on MariaDB and SQLite."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
from sqlalchemy import DateTime, Dialect, Text
from sqlalchemy.dialects import mysql
from sqlalchemy.types import TypeDecorator, TypeEngine


class UtcDateTime(TypeDecorator[datetime]):
    """A point in time: stored as naive UTC, handed back tz-aware (UTC).

    Neither SQLite nor MariaDB's DATETIME keeps a zone, so every value is normalised to
    UTC on the way in; storing a naive datetime is refused, since its zone is a guess.
    On MariaDB the column keeps microseconds (DATETIME(6)): heartbeat ordering and
    liveness compare instants closer together than a second.
    """

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime())

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"a naive datetime cannot be stored: {value!r}")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC)


class JsonText(TypeDecorator[Any]):
    """A JSON document in a TEXT column (portable: no JSON column type needed)."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return msgspec.json.encode(value).decode("utf-8")

    def process_result_value(self, value: str | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        return msgspec.json.decode(value)
