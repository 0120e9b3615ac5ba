"""The async engine, tuned per backend."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

# Writers wait this long for SQLite's lock instead of failing at once with "locked".
SQLITE_BUSY_TIMEOUT_MS = 5000
# MariaDB closes idle connections after wait_timeout (8 h by default); recycling well
# before that, plus a ping on checkout, spares requests a dead connection.
MYSQL_POOL_RECYCLE_S = 1800


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # The driver's own transaction handling begins a transaction only at the first
    # write: the reads before it would see another snapshot than the write, and a read
    # "FOR UPDATE" (which SQLite does not have) would guard nothing. Transactions are
    # begun by _sqlite_on_begin instead.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        # SQLite leaves foreign keys off unless each connection asks for them.
        cursor.execute("PRAGMA foreign_keys=ON")
        # WAL lets readers go on while one connection writes.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    finally:
        cursor.close()


def _sqlite_on_begin(conn: Any) -> None:
    # IMMEDIATE: the transaction holds the database's write lock from its first
    # statement, so what it reads stays true until it commits. That is what the row
    # locks of MariaDB give the same code (SELECT ... FOR UPDATE); here it is the whole
    # database, one writer at a time, which suits the all-in-one. WAL lets readers of
    # other connections go on meanwhile.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def create_engine(url: str, *, pool_size: int, echo: bool) -> AsyncEngine:
    """An AsyncEngine for `url` (sqlite+aiosqlite:// or mysql+aiomysql://)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        options: dict[str, Any] = {}
        if parsed.database not in (None, "", ":memory:"):
            # A file database gets a queue pool; in-memory ones use a static pool,
            # which takes no size.
            options["pool_size"] = pool_size
        engine = create_async_engine(parsed, echo=echo, **options)
        event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
        event.listen(engine.sync_engine, "begin", _sqlite_on_begin)
        return engine
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() in ("mysql", "mariadb") and "charset" not in parsed.query:
        # Without it the driver may talk latin1 and mangle names outside it.
        connect_args["charset"] = "utf8mb4"
    return create_async_engine(
        parsed,
        echo=echo,
        pool_size=pool_size,
        pool_pre_ping=True,
        pool_recycle=MYSQL_POOL_RECYCLE_S,
        connect_args=connect_args,
    )
