"""Schema migrations, driven through alembic's API (no alembic.ini involved).

Alembic runs synchronously: from async code call these through asyncio.to_thread.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

MIGRATIONS_DIR = Path(__file__).resolve().with_name("migrations")

# The async drivers the application uses, and the sync drivers alembic runs with.
_SYNC_DRIVERS: Mapping[str, str] = MappingProxyType(
    {
        "mysql+aiomysql": "mysql+pymysql",
        "mariadb+aiomysql": "mariadb+pymysql",
        "sqlite+aiosqlite": "sqlite",
    }
)


def sync_url(url: str) -> URL:
    """The same database reached through a synchronous driver."""
    parsed = make_url(url)
    driver = _SYNC_DRIVERS.get(parsed.drivername)
    if driver is not None:
        parsed = parsed.set(drivername=driver)
    if parsed.get_backend_name() in ("mysql", "mariadb") and "charset" not in parsed.query:
        parsed = parsed.update_query_dict({"charset": "utf8mb4"})
    return parsed


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Handed over as an object, not a main option: an option would go through
    # configparser interpolation and break on a '%' in a password.
    config.attributes["url"] = sync_url(url)
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at `url` up to `revision`; a no-op when it is there already."""
    command.upgrade(alembic_config(url), revision)


def current(url: str) -> str | None:
    """The revision the database is at, or None when it has never been migrated."""
    engine = create_engine(sync_url(url), poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def head() -> str:
    """The newest revision the code knows."""
    revision = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    if revision is None:
        raise RuntimeError(f"no migrations found in {MIGRATIONS_DIR}")
    return revision
