"""Small helpers over SQLAlchemy results."""

from __future__ import annotations

from typing import Any

from sqlalchemy import CursorResult


def inserted_id(result: CursorResult[Any]) -> int:
    """The primary key a single-row INSERT generated."""
    key = result.inserted_primary_key
    if key is None or key[0] is None:
        raise RuntimeError("the insert reported no generated primary key")
    return int(key[0])
