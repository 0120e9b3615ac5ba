from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from abiquo_central.db.migrate import MIGRATIONS_DIR, current, head, sync_url, upgrade
from abiquo_central.db.tables import metadata
from tests import services


@pytest.fixture(params=["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database that has never been migrated."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
        return
    session_url = make_url(request.getfixturevalue("mariadb_url"))
    name = f"{session_url.database}_migrations"
    conn = pymysql.connect(host=services.MARIADB_HOST, port=services.MARIADB_PORT, user="root")
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        yield session_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        conn.close()


def _differences(url: str) -> list[object]:
    engine = create_engine(sync_url(url), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


def _tables(url: str) -> set[str]:
    engine = create_engine(sync_url(url), poolclass=NullPool)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


async def test_upgrade_creates_the_schema_and_twice_is_a_no_op(fresh_url: str) -> None:
    newest = await asyncio.to_thread(head)
    assert await asyncio.to_thread(current, fresh_url) is None
    await asyncio.to_thread(upgrade, fresh_url)
    assert await asyncio.to_thread(current, fresh_url) == newest
    await asyncio.to_thread(upgrade, fresh_url)
    assert await asyncio.to_thread(current, fresh_url) == newest
    assert await asyncio.to_thread(_tables, fresh_url) >= {
        "enterprise",
        "role",
        "role_privilege",
        "user",
        "datacenter",
        "datacenter_liveness",
        "alembic_version",
    }
    # The migrations build exactly what tables.py describes.
    assert await asyncio.to_thread(_differences, fresh_url) == []


def test_migrations_ship_with_the_package() -> None:
    assert head()
    assert (MIGRATIONS_DIR / "env.py").is_file()
    assert (MIGRATIONS_DIR / "script.py.mako").is_file()
    assert (MIGRATIONS_DIR / "versions" / "0001_initial.py").is_file()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite+aiosqlite:///var/x.db", "sqlite:///var/x.db"),
        ("sqlite+aiosqlite://", "sqlite://"),
        (
            "mysql+aiomysql://u:p%40ss@db:3306/abiquo",
            "mysql+pymysql://u:p%40ss@db:3306/abiquo?charset=utf8mb4",
        ),
        (
            "mysql+aiomysql://u@db/abiquo?charset=utf8",
            "mysql+pymysql://u@db/abiquo?charset=utf8",
        ),
    ],
)
def test_sync_url(url: str, expected: str) -> None:
    assert sync_url(url).render_as_string(hide_password=False) == expected
