"""Migration 0006 writes the default category and the system properties, and takes
them back on downgrade; on a fresh database of each kind."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import create_engine, select
from sqlalchemy.pool import NullPool

from abiquo_central.db import tables
from abiquo_central.db.migrate import alembic_config, sync_url, upgrade
from tests.central.config import config_defaults


@pytest.fixture(params=["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)])
def fresh(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
    url: str = request.getfixturevalue("fresh_database_url")
    return url


def _rows(url: str) -> tuple[list[tuple[str, bool, bool]], dict[str, str]]:
    engine = create_engine(sync_url(url), poolclass=NullPool)
    cat, prop = tables.category, tables.system_property
    try:
        with engine.connect() as conn:
            categories = [
                (r.name, bool(r.erasable), bool(r.is_default))
                for r in conn.execute(select(cat).order_by(cat.c.id))
            ]
            properties = {r.name: r.value for r in conn.execute(select(prop))}
            return categories, properties
    finally:
        engine.dispose()


def _downgrade(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)


async def test_upgrade_writes_the_defaults_and_downgrade_removes_them(fresh: str) -> None:
    await asyncio.to_thread(upgrade, fresh)
    categories, properties = await asyncio.to_thread(_rows, fresh)
    assert categories == [("Others", False, True)]
    defaults = config_defaults()
    assert properties == {p["name"]: p["value"] for p in defaults.PROPERTIES}
    assert all(p["description"] for p in defaults.PROPERTIES)
    assert "client.main.billingUrl" in properties
    await asyncio.to_thread(_downgrade, fresh, "0005")
    assert await asyncio.to_thread(_rows, fresh) == ([], {})
    await asyncio.to_thread(upgrade, fresh)
    assert (await asyncio.to_thread(_rows, fresh))[0] == [("Others", False, True)]
