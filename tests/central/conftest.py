"""Fixtures for central's tests: databases (SQLite and MariaDB), seeded users, the API.

`database` is parametrized over both backends, so that every test that uses it (through
`db_url`, `engine`, `seeded` or `api`) runs the same on SQLite and on MariaDB. Each is
migrated and seeded once per session; each test then starts from a known state: SQLite
from a copy of a template file, MariaDB by restoring a snapshot of the rows.
"""

from __future__ import annotations

import asyncio
import base64
import shutil
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from argon2 import PasswordHasher
from cryptography.fernet import Fernet
from sqlalchemy import Engine, select
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool

from abiquo_central.api import build_api
from abiquo_central.db import tables
from abiquo_central.db.engine import create_engine
from abiquo_central.db.migrate import sync_url, upgrade
from abiquo_central.link import DatacenterRequests, NoLink
from abiquo_central.settings import CentralSettings
from abiquo_central.tenants import privileges
from abiquo_central.tenants.passwords import Passwords
from abiquo_central.tenants.seed import ensure_admin
from abiquo_central.tenants.users import create_user
from abiquo_runtime.secrets import SecretBox

ADMIN_PASSWORD = "admin-secret"
USER_NICK = "jdoe"
USER_PASSWORD = "user-secret"
T0 = datetime(2025, 3, 1, 12, 0, 0, 250_000, tzinfo=UTC)


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def basic(nick: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{nick}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


ADMIN = basic("admin", ADMIN_PASSWORD)
USER = basic(USER_NICK, USER_PASSWORD)


@pytest.fixture(scope="session")
def fast_passwords() -> Passwords:
    # argon2's cheapest parameters: the tests verify a password on every request.
    return Passwords(PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))


@dataclass(frozen=True)
class Seeded:
    """What the seeded databases hold besides the seed itself: ids the tests need."""

    enterprise_id: int
    user_id: int


async def _seed(url: str, passwords: Passwords) -> Seeded:
    engine = create_engine(url, pool_size=1, echo=False)
    try:
        await ensure_admin(engine, password=ADMIN_PASSWORD, passwords=passwords, now=T0)
        async with engine.connect() as conn:
            enterprise_id = (
                await conn.execute(
                    select(tables.enterprise.c.id).where(tables.enterprise.c.name == "Abiquo")
                )
            ).scalar_one()
        user_id = await create_user(
            engine,
            passwords=passwords,
            enterprise_id=enterprise_id,
            role=privileges.USER,
            nick=USER_NICK,
            password=USER_PASSWORD,
            name="Jane",
            now=T0,
        )
        return Seeded(enterprise_id=enterprise_id, user_id=user_id)
    finally:
        await engine.dispose()


def seed_once(url: str, passwords: Passwords) -> Seeded:
    """Seed from a session fixture: on a loop of its own, in a thread of its own, so
    that the test loops pytest-asyncio manages are left alone."""
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, _seed(url, passwords)).result()


def _sync_engine(url: str) -> Engine:
    return create_sync_engine(sync_url(url), poolclass=NullPool)


Snapshot = dict[str, list[dict[str, Any]]]


def _dump(url: str) -> Snapshot:
    engine = _sync_engine(url)
    try:
        with engine.connect() as conn:
            return {
                t.name: [dict(r._mapping) for r in conn.execute(t.select())]
                for t in tables.metadata.sorted_tables
            }
    finally:
        engine.dispose()


def _restore(url: str, snapshot: Snapshot) -> None:
    """Every table back to `snapshot` (empty when it is empty), in one transaction."""
    engine = _sync_engine(url)
    try:
        with engine.begin() as conn:
            for table in reversed(tables.metadata.sorted_tables):
                conn.execute(table.delete())
            for table in tables.metadata.sorted_tables:
                if snapshot.get(table.name):
                    conn.execute(table.insert(), snapshot[table.name])
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def sqlite_templates(
    tmp_path_factory: pytest.TempPathFactory, fast_passwords: Passwords
) -> tuple[Path, Path, Seeded]:
    """Two migrated SQLite files to copy: an empty one and a seeded one."""
    folder = tmp_path_factory.mktemp("sqlite-templates")
    empty, seeded = folder / "empty.db", folder / "seeded.db"
    upgrade(f"sqlite+aiosqlite:///{empty}")
    shutil.copyfile(empty, seeded)
    ids = seed_once(f"sqlite+aiosqlite:///{seeded}", fast_passwords)
    return empty, seeded, ids


@pytest.fixture(scope="session")
def mariadb_snapshots(
    mariadb_url: str, fast_passwords: Passwords
) -> tuple[str, Snapshot, Snapshot, Seeded]:
    """The session's MariaDB database, and its rows once migrated (the rows migrations
    write, such as the default category) and once seeded too."""
    upgrade(mariadb_url)
    migrated = _dump(mariadb_url)
    ids = seed_once(mariadb_url, fast_passwords)
    return mariadb_url, migrated, _dump(mariadb_url), ids


@pytest.fixture(params=["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Seeded]:
    """A migrated database of each kind, and the ids of its seed.

    It holds what the migrations write, and, when the test uses `seeded` (directly or
    through `api`), the seeded enterprise, roles and admin, and a USER `jdoe`.
    """
    seeded = "seeded" in request.fixturenames
    if request.param == "sqlite":
        empty, with_seed, ids = request.getfixturevalue("sqlite_templates")
        path = tmp_path / "central.db"
        shutil.copyfile(with_seed if seeded else empty, path)
        return f"sqlite+aiosqlite:///{path}", ids
    url, migrated, with_seed, ids = request.getfixturevalue("mariadb_snapshots")
    _restore(url, with_seed if seeded else migrated)
    return url, ids


@pytest.fixture
def db_url(database: tuple[str, Seeded]) -> str:
    return database[0]


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(db_url, pool_size=5, echo=False)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
def seeded(database: tuple[str, Seeded]) -> Seeded:
    """The ids in the seeded database (see `database`)."""
    return database[1]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings() -> CentralSettings:
    return CentralSettings()


def mount(api: web.Application) -> web.Application:
    root = web.Application()
    root.add_subapp("/api", api)
    return root


@pytest.fixture(scope="session")
def secrets() -> SecretBox:
    return SecretBox(Fernet.generate_key())


@pytest.fixture
def link() -> DatacenterRequests:
    """What the API reaches datacenters through: none, unless a test overrides this."""
    return NoLink()


@pytest.fixture
async def api(
    engine: AsyncEngine,
    seeded: Seeded,
    settings: CentralSettings,
    clock: FakeClock,
    fast_passwords: Passwords,
    secrets: SecretBox,
    link: DatacenterRequests,
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    """A client of the API, mounted at /api as the composition root does."""
    app = build_api(
        engine=engine,
        settings=settings,
        clock=clock,
        passwords=fast_passwords,
        secrets=secrets,
        link=link,
    )
    async with TestClient(TestServer(mount(app))) as client:
        yield client


@pytest.fixture
async def lone_engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """An engine on an empty, unmigrated SQLite file: for apps that never query."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}", pool_size=1, echo=False)
    try:
        yield engine
    finally:
        await engine.dispose()
