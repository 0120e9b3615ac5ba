"""The base of the datacenter's six remote services: a unit with an explicit lifecycle.

STARTING → RUNNING; a TemporaryError while starting (a hypervisor, a repository, Redis
not there yet) → RETRYING, and it starts again after a backoff, for as long as it takes;
any other error → FAILED, which needs an operator. stop() → STOPPED from any state.
A subsystem that cannot start never stops the process: the others run on, its /check
answers 503, and every state change goes out on the bus (and from there to central).

Resources are opened in `setup()`, never in the constructor, and closed in `teardown()`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

import structlog
from aiohttp import web

from abiquo_dc.bus import Bus
from abiquo_dc.protocol.messages import ServiceState, SubsystemStateChanged
from abiquo_runtime.backoff import Backoff
from abiquo_runtime.errors import TemporaryError
from abiquo_runtime.tasks import Supervisor


class Subsystem:
    """Subclasses set `name` (the package) and `path` (Abiquo's URL name for it)."""

    name: str = ""
    path: str = ""
    # Abiquo's checks of virtualfactory and bpm-async answer with the datacenter UUID.
    check_answers_uuid: bool = False

    def __init__(
        self,
        *,
        bus: Bus,
        dc_uuid: str,
        backoff: Callable[[], Backoff] = Backoff,
    ) -> None:
        self.bus = bus
        self.dc_uuid = dc_uuid
        self._backoff = backoff()
        self._state = ServiceState.STOPPED
        self._reason = ""
        self._ready = False
        self.tasks = Supervisor(f"dc.{self.name}")
        self.log = structlog.get_logger(f"abiquo.dc.{self.name}").bind(subsystem=self.name)

    # -- what subclasses override ------------------------------------------------------

    async def setup(self) -> None:
        """Open resources and subscribe to the bus. Raise TemporaryError to be retried."""

    async def teardown(self) -> None:
        """Close what setup opened, in reverse order."""

    def routes(self) -> list[web.RouteDef]:
        """The HTTP routes of this service; the check is always there."""
        return []

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def state(self) -> ServiceState:
        return self._state

    @property
    def reason(self) -> str:
        return self._reason

    async def _set_state(self, state: ServiceState, reason: str = "") -> None:
        if state == self._state and reason == self._reason:
            return
        self._state, self._reason = state, reason
        self.log.info("state changed", state=state.value, reason=reason or None)
        await self.bus.publish(
            SubsystemStateChanged(
                dc_uuid=self.dc_uuid,
                service=self.path,
                state=state,
                reason=reason,
                at=datetime.now(UTC),
            )
        )

    async def start(self) -> None:
        """Begin starting: returns at once; the state tells how it goes."""
        await self._set_state(ServiceState.STARTING)
        self.tasks.spawn(self._start_until_running(), name="start")

    async def _start_until_running(self) -> None:
        while True:
            try:
                await self.setup()
            except TemporaryError as exc:
                await self._undo_partial_setup()
                delay = self._backoff.next_delay()
                await self._set_state(
                    ServiceState.RETRYING, f"{exc.message}; retry in {delay:.1f}s"
                )
                await asyncio.sleep(delay)
                continue
            except Exception as exc:
                self.log.exception("start failed")
                await self._undo_partial_setup()
                await self._set_state(ServiceState.FAILED, f"{type(exc).__name__}: {exc}")
                return
            self._ready = True
            self._backoff.reset()
            await self._set_state(ServiceState.RUNNING)
            return

    async def _undo_partial_setup(self) -> None:
        try:
            await self.teardown()
        except Exception:
            self.log.exception("teardown after a failed start failed")

    async def wait_running(self, timeout: float) -> None:
        """For tests and start-up ordering: wait for RUNNING (raise on FAILED or timeout)."""
        async with asyncio.timeout(timeout):
            while self._state is not ServiceState.RUNNING:
                if self._state is ServiceState.FAILED:
                    raise RuntimeError(f"{self.name} failed: {self._reason}")
                await asyncio.sleep(0.01)

    async def stop(self) -> None:
        await self.tasks.close()
        if self._ready:
            self._ready = False
            try:
                await self.teardown()
            except Exception:
                self.log.exception("teardown failed")
        await self._set_state(ServiceState.STOPPED)

    # -- the Abiquo health check -------------------------------------------------------

    async def check(self, request: web.Request) -> web.Response:
        if self._state is not ServiceState.RUNNING:
            return web.Response(
                status=503, text=f"{self.path} is {self._state.value}: {self._reason}".strip()
            )
        return web.Response(text=self.dc_uuid if self.check_answers_uuid else "")

    def all_routes(self) -> list[web.RouteDef]:
        return [web.get(f"/{self.path}/check", self.check), *self.routes()]
