"""Fixtures every test shares.

- Each async test fails when its event loop was blocked for more than 100 ms by one
  callback (see loopguard: time waiting for a CPU is not counted), and when it leaves
  tasks running.
- Session fixtures hand out the real services: a fresh MariaDB database, RabbitMQ vhost
  and Redis key prefix for this run.
"""

from __future__ import annotations

import asyncio
import gc
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from abiquo_runtime.logs import configure_logging
from abiquo_runtime.settings import LogSettings
from tests import loopguard, services


@pytest.fixture(autouse=True)
async def loop_guard(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Fail a test that blocked its loop or left tasks behind."""
    # The test process holds a large heap (every module, the fixtures of the session): a
    # full collection over it takes tens of milliseconds and, landing inside whichever
    # callback runs, reads as a blocked loop. Freezing what exists now (O(1)) leaves a
    # collection only this test's objects to walk. The programs do the same after start.
    gc.freeze()
    loopguard.take()
    yield
    for _ in range(5):
        await asyncio.sleep(0)
    me = asyncio.current_task()
    left = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
    if left and "allow_leftover_tasks" not in request.keywords:
        names = sorted(f"{t.get_name()} {t.get_coro()!r}" for t in left)
        for task in left:
            task.cancel()
        await asyncio.wait(left, timeout=2)
        pytest.fail(f"the test left {len(left)} task(s) running: {names}", pytrace=False)
    blocked = loopguard.take()
    if blocked:
        pytest.fail(
            f"the event loop was blocked for more than {loopguard.LIMIT * 1000:.0f} ms: "
            + loopguard.describe(blocked),
            pytrace=False,
        )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "allow_leftover_tasks: the test checks leftovers itself")
    # As the programs do: structlog through the standard library, so caplog sees it all.
    configure_logging(LogSettings(level="info", format="console"), program="tests")
    loopguard.install()


@pytest.fixture(scope="session")
def mariadb_url() -> Iterator[str]:
    """A fresh MariaDB database for this run, as an async SQLAlchemy URL."""
    try:
        import pymysql

        conn = pymysql.connect(
            host=services.MARIADB_HOST,
            port=services.MARIADB_PORT,
            user=services.MARIADB_USER,
            password=services.MARIADB_PASSWORD,
        )
    except Exception as exc:
        services.unavailable("MariaDB", str(exc))
        raise
    name = f"abiquo_test_{services.RUN_ID}"
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    try:
        yield (
            f"mysql+aiomysql://{services.MARIADB_USER}:{services.MARIADB_PASSWORD}"
            f"@{services.MARIADB_HOST}:{services.MARIADB_PORT}/{name}"
        )
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        conn.close()


@pytest.fixture(scope="session")
def rabbitmq_vhost() -> Iterator[str]:
    """A fresh RabbitMQ vhost for this run (guest has every permission on it)."""
    if not services.port_open(services.RABBITMQ_HOST, services.RABBITMQ_PORT):
        services.unavailable("RabbitMQ", f"nothing listens on port {services.RABBITMQ_PORT}")
    vhost = f"abiquo-test-{services.RUN_ID}"
    try:
        services.rabbitmqctl("add_vhost", vhost)
        services.rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    except Exception as exc:
        services.unavailable("RabbitMQ", f"rabbitmqctl failed: {exc}")
    try:
        yield vhost
    finally:
        services.rabbitmqctl("delete_vhost", vhost)


@pytest.fixture(scope="session")
def rabbitmq_url(rabbitmq_vhost: str) -> str:
    return f"amqp://guest:guest@{services.RABBITMQ_HOST}:{services.RABBITMQ_PORT}/{rabbitmq_vhost}"


@pytest.fixture(scope="session")
def redis_prefix() -> str:
    """The key prefix of this run, on the local Redis."""
    if not services.port_open(services.REDIS_HOST, services.REDIS_PORT):
        services.unavailable("Redis", f"nothing listens on port {services.REDIS_PORT}")
    return f"abiquo-test-{services.RUN_ID}:"


@pytest.fixture
def fresh_database_url(mariadb_url: str) -> Iterator[str]:
    """A MariaDB database of this test's own (empty, not migrated), dropped after it."""
    import pymysql

    name = f"abiquo_t_{uuid.uuid4().hex[:10]}"
    conn = pymysql.connect(
        host=services.MARIADB_HOST,
        port=services.MARIADB_PORT,
        user=services.MARIADB_USER,
        password=services.MARIADB_PASSWORD,
    )
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}`")
    try:
        yield mariadb_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        conn.close()
