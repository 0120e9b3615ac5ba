"""Messages to datacenters, written with the decision that makes them and sent after.

`enqueue` writes a message into the outbox table in the caller's transaction: a VM is
LOCKED, its task written and its message queued, all or nothing. The relay then sends
what is queued and marks it sent. A crash between the commit and the send leaves the
row unsent, and the next relay (after a restart, or another central process's) sends
it; a crash between the send and the mark sends it twice, which the datacenter
recognises (a task it knows attaches to its run, or is known finished).

Several central processes relay the same table: each takes a batch with
`FOR UPDATE SKIP LOCKED` (MariaDB/MySQL; SQLite has one writer anyway), so a row is sent
by one of them at a time, and rows are sent in the order they were written.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from abiquo_central.db import tables
from abiquo_dc.protocol import codec
from abiquo_dc.protocol.messages import Inbound, Message
from abiquo_runtime.backoff import Backoff
from abiquo_runtime.errors import AbiquoError

_out = tables.outbox

Send = Callable[[str, str, Message], Awaitable[None]]
Clock = Callable[[], datetime]

# Sent rows are kept this long (to see what left when), then removed.
KEEP_SENT = timedelta(days=1)


async def enqueue(
    conn: AsyncConnection, dc_uuid: str, service: str, message: Message, *, now: datetime
) -> None:
    """Queue `message` for the datacenter's `service` queue, in `conn`'s transaction."""
    await conn.execute(
        _out.insert().values(
            dc_uuid=dc_uuid,
            service=service,
            body=codec.encode(message).decode("utf-8"),
            created_at=now,
            sent_at=None,
        )
    )


class OutboxRelay:
    """Sends what the outbox holds: at once when `wake` is called (after a commit that
    queued something), and every `poll_interval` seconds for what others queued."""

    def __init__(
        self,
        engine: AsyncEngine,
        send: Send,
        *,
        clock: Clock,
        batch: int = 100,
        poll_interval: float = 1.0,
    ) -> None:
        self._engine, self._send, self._clock = engine, send, clock
        self._batch, self._poll = batch, poll_interval
        self._wake = asyncio.Event()
        self._log = structlog.get_logger("abiquo.central.outbox")

    def wake(self) -> None:
        self._wake.set()

    async def drain(self) -> int:
        """Send every queued message; how many were sent. Stops at the first that
        cannot be sent (the broker away): the rest wait for the next round, in order."""
        sent = 0
        while True:
            done, more = await self._round()
            sent += done
            if not more:
                return sent

    async def _round(self) -> tuple[int, bool]:
        sent = 0
        async with self._engine.begin() as conn:
            rows = (
                await conn.execute(
                    select(_out.c.id, _out.c.dc_uuid, _out.c.service, _out.c.body)
                    .where(_out.c.sent_at.is_(None))
                    .order_by(_out.c.id)
                    .limit(self._batch)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            for row in rows:
                message = codec.decode(row.body.encode("utf-8"), Inbound)
                try:
                    await self._send(row.dc_uuid, row.service, message)
                except AbiquoError as exc:
                    self._log.warning("outbox: a message could not be sent yet", error=exc)
                    return sent, False
                await conn.execute(
                    _out.update().where(_out.c.id == row.id).values(sent_at=self._clock())
                )
                sent += 1
        return sent, len(rows) == self._batch

    async def _prune(self) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                _out.delete().where(
                    _out.c.sent_at.is_not(None), _out.c.sent_at < self._clock() - KEEP_SENT
                )
            )

    async def run(self) -> None:
        """Forever: drain, then wait to be woken or for the poll interval."""
        backoff = Backoff(initial=self._poll, maximum=30.0)
        rounds = 0
        while True:
            self._wake.clear()
            try:
                await self.drain()
                backoff.reset()
                rounds += 1
                if rounds % 3600 == 0:
                    await self._prune()
                delay = self._poll
            except Exception:
                # The database away: log, and try again later rather than die.
                self._log.exception("outbox: relay round failed")
                delay = backoff.next_delay()
            try:
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            except TimeoutError:
                pass
