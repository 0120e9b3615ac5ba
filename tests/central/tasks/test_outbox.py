"""The outbox: queued with the transaction that decides, sent once after its commit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from abiquo_central.db.engine import create_engine
from abiquo_central.tasks.outbox import OutboxRelay, enqueue
from abiquo_dc.protocol.messages import CheckServices, Message
from tests.central.conftest import FakeClock


class Sent:
    def __init__(self) -> None:
        self.messages: list[tuple[str, str, Message]] = []

    async def __call__(self, dc_uuid: str, service: str, message: Message) -> None:
        await asyncio.sleep(0)  # a send yields, as a broker's confirm does
        self.messages.append((dc_uuid, service, message))


async def test_a_rolled_back_transaction_sends_nothing(
    engine: AsyncEngine, clock: FakeClock
) -> None:
    class Undone(Exception):
        pass

    with pytest.raises(Undone):
        async with engine.begin() as conn:
            await enqueue(conn, "dc-1", "rpc", CheckServices(dc_uuid="dc-1"), now=clock())
            raise Undone
    sent = Sent()
    assert await OutboxRelay(engine, sent, clock=clock).drain() == 0
    async with engine.begin() as conn:
        for i in range(3):
            await enqueue(conn, f"dc-{i}", "rpc", CheckServices(dc_uuid=f"dc-{i}"), now=clock())
    assert await OutboxRelay(engine, sent, clock=clock, batch=2).drain() == 3
    assert [m[0] for m in sent.messages] == ["dc-0", "dc-1", "dc-2"]


@pytest.fixture
async def second_process(db_url: str) -> AsyncIterator[AsyncEngine]:
    other = create_engine(db_url, pool_size=2, echo=False)
    yield other
    await other.dispose()


@pytest.mark.mariadb
@pytest.mark.parametrize("database", ["mariadb"], indirect=True)
async def test_two_relays_send_each_message_once(
    engine: AsyncEngine, second_process: AsyncEngine, clock: FakeClock
) -> None:
    async with engine.begin() as conn:
        for i in range(60):
            await enqueue(conn, f"dc-{i}", "rpc", CheckServices(dc_uuid=f"dc-{i}"), now=clock())
    first, second = Sent(), Sent()
    counts = await asyncio.gather(
        OutboxRelay(engine, first, clock=clock, batch=5).drain(),
        OutboxRelay(second_process, second, clock=clock, batch=5).drain(),
    )
    assert sum(counts) == 60
    names = [m[0] for m in first.messages + second.messages]
    assert sorted(names) == sorted(f"dc-{i}" for i in range(60))
