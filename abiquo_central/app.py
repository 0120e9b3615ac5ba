"""abiquo-central's composition root: settings → database → link → the API over HTTP.

The root aiohttp application mounts the API under /api and owns the resources through
its cleanup contexts, opened in this order and closed in the reverse one:

1. the database engine (its pool; closed last, after everything that uses it);
2. the link to the datacenters: connected, queues declared, reply queue consumed;
3. the outbox relay, which sends the messages tasks queued in the database, and the
   watch that asks about tasks without news;
4. the link's consumers of heartbeats, notifications and events.

Shutdown, in stages with a timeout each: stop accepting (the HTTP listener, the link's
consumers), drain (in-flight HTTP requests and messages in handlers), close (the cleanup
contexts above, in reverse).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from pathlib import Path

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from abiquo_central.api import build_api
from abiquo_central.api.keys import utc_now
from abiquo_central.db.engine import create_engine
from abiquo_central.link import CentralLink
from abiquo_central.notifications import message_handler
from abiquo_central.settings import CentralSettings
from abiquo_central.tasks.outbox import OutboxRelay
from abiquo_central.tasks.reconcile import TaskWatch
from abiquo_dc.protocol.messages import Message
from abiquo_runtime.httpserver import HttpServer
from abiquo_runtime.messaging.transport import Transport
from abiquo_runtime.secrets import SecretBox
from abiquo_runtime.shutdown import Stage, three_stages
from abiquo_runtime.tasks import Supervisor

ENGINE = web.AppKey("engine", AsyncEngine)
LINK = web.AppKey("link", CentralLink)


class Central:
    """One running central process: the object abiquo_runtime.process.serve runs."""

    def __init__(
        self,
        settings: CentralSettings,
        *,
        transport: Transport,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.settings = settings
        # What "now" is to liveness (tests move it).
        self.clock: Callable[[], datetime] = clock if clock is not None else utc_now
        # Creating the engine opens nothing: connections come with the first query.
        self.engine = create_engine(
            settings.database.url,
            pool_size=settings.database.pool_size,
            echo=settings.database.echo,
        )
        self.secrets = SecretBox.open(Path(settings.secrets.key_file))
        self.link = CentralLink(
            transport=transport, on_message=self._on_message, prefetch=settings.rabbitmq.prefetch
        )
        # Made after the link, which it sends through.
        self._handle = message_handler(
            engine=self.engine,
            link=self.link,
            secrets=self.secrets,
            request_timeout=settings.datacenters.request_timeout,
            liveness_timeout=settings.datacenters.liveness_timeout,
            clock=self.clock,
        )
        # Sends what tasks queued in the outbox table, after their commit.
        self.outbox = OutboxRelay(self.engine, self.link.send, clock=self.clock)
        self.tasks = Supervisor("central")
        self.app = web.Application()
        self.app[ENGINE] = self.engine
        self.app[LINK] = self.link
        self.app.add_subapp(
            "/api",
            build_api(
                engine=self.engine,
                settings=settings,
                secrets=self.secrets,
                link=self.link,
                on_queued=self.outbox.wake,
                clock=self.clock,
            ),
        )
        self.app.cleanup_ctx.extend(
            [self._engine_ctx, self._link_ctx, self._outbox_ctx, self._accept_ctx]
        )
        self.server = HttpServer(
            self.app,
            host=settings.http.host,
            port=settings.http.port,
            drain_timeout=settings.shutdown.drain_timeout,
        )

    async def _on_message(self, message: Message) -> None:
        await self._handle(message)

    async def _engine_ctx(self, app: web.Application) -> AsyncIterator[None]:
        yield
        await self.engine.dispose()

    async def _link_ctx(self, app: web.Application) -> AsyncIterator[None]:
        await self.link.start()
        yield
        await self.link.close()

    async def _outbox_ctx(self, app: web.Application) -> AsyncIterator[None]:
        # Before the link closes: a send in flight finishes or is cancelled, and what
        # it did not mark sent goes at the next start.
        self.tasks.spawn(self.outbox.run(), name="outbox relay", forever=True)
        watch = TaskWatch(
            self.engine,
            self.secrets,
            clock=self.clock,
            stale_after=self.settings.tasks.stale_after,
            interval=self.settings.tasks.check_interval,
            on_queued=self.outbox.wake,
        )
        self.tasks.spawn(watch.run(), name="stale tasks", forever=True)
        yield
        await self.tasks.close()

    async def _accept_ctx(self, app: web.Application) -> AsyncIterator[None]:
        await self.link.accept()
        yield
        await self.link.stop_accepting()

    @property
    def url(self) -> str:
        return self.server.url

    async def start(self) -> None:
        await self.server.start()

    def still_running(self) -> list[str]:
        flying = self.link.in_flight()
        return [f"link deliveries in handlers={flying}"] if flying else []

    def shutdown_stages(self) -> Sequence[Stage]:
        drain_timeout = self.settings.shutdown.drain_timeout
        return three_stages(
            self.settings.shutdown,
            stop_accepting=[
                ("http listener", self.server.stop_accepting),
                ("link consumers", self.link.stop_accepting),
            ],
            drain=[
                ("http requests", self.server.drain),
                ("link deliveries", lambda: self.link.drain(drain_timeout)),
            ],
            close=[("resources", self.server.close)],
            still_running=self.still_running,
        )
