from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, insert, select, text
from sqlalchemy.exc import StatementError
from sqlalchemy.ext.asyncio import AsyncEngine

from abiquo_central.db.engine import create_engine
from abiquo_central.db.types import JsonText, UtcDateTime


async def test_sqlite_connections_enforce_foreign_keys_and_use_wal(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}", pool_size=2, echo=False)
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("PRAGMA foreign_keys"))).scalar() == 1
            assert (await conn.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
            assert (await conn.execute(text("PRAGMA busy_timeout"))).scalar() == 5000
    finally:
        await engine.dispose()


async def test_in_memory_sqlite_works_too() -> None:
    engine = create_engine("sqlite+aiosqlite://", pool_size=2, echo=False)
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT 1"))).scalar() == 1
    finally:
        await engine.dispose()


_probe = MetaData()
_times = Table(
    "probe_times",
    _probe,
    Column("id", Integer, primary_key=True),
    Column("at", UtcDateTime),
    Column("doc", JsonText),
)


async def test_datetimes_are_stored_as_utc_and_come_back_aware(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(_probe.create_all)
    try:
        madrid = timezone(timedelta(hours=2))
        moment = datetime(2025, 6, 1, 14, 30, 15, 123456, tzinfo=madrid)
        async with engine.begin() as conn:
            await conn.execute(insert(_times).values(id=1, at=moment, doc={"a": [1, "b"]}))
        async with engine.connect() as conn:
            row = (await conn.execute(select(_times.c.at, _times.c.doc))).one()
            assert row.at == moment
            assert row.at.tzinfo is UTC
            assert row.at.hour == 12 and row.at.microsecond == 123456
            assert row.doc == {"a": [1, "b"]}
            # Comparisons happen in UTC, microseconds included.
            later = moment + timedelta(microseconds=1)
            assert (
                await conn.execute(select(_times.c.id).where(_times.c.at < later))
            ).scalar() == 1
        with pytest.raises(StatementError, match="naive"):
            async with engine.begin() as conn:
                await conn.execute(insert(_times).values(id=2, at=datetime(2025, 1, 1)))
    finally:
        async with engine.begin() as conn:
            await conn.run_sync(_probe.drop_all)
