"""What the datacenter says of itself: heartbeats to central and the CheckServices reply.

A heartbeat goes out every `interval`, and at once whenever a service changes state.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import structlog

from abiquo_dc.bus import Bus, Unsubscribe
from abiquo_dc.protocol.messages import (
    CheckServices,
    Heartbeat,
    ServicesStatus,
    ServiceState,
    SubsystemStateChanged,
)
from abiquo_dc.subsystem import Subsystem
from abiquo_runtime.tasks import Supervisor


class StatusReporter:
    def __init__(
        self,
        *,
        bus: Bus,
        dc_uuid: str,
        name: str,
        subsystems: Sequence[Subsystem],
        http_url: Callable[[], str],
        interval: float,
    ) -> None:
        self._bus = bus
        self._dc_uuid = dc_uuid
        self._name = name
        self._subsystems = subsystems
        self._http_url = http_url
        self._interval = interval
        self._sequence = 0
        self._started_at = datetime.now(UTC)
        self._tasks = Supervisor("dc.status")
        self._unserve: Unsubscribe | None = None
        self._unsubscribe: Unsubscribe | None = None
        self._log = structlog.get_logger("abiquo.dc.status")

    def services(self) -> dict[str, ServiceState]:
        return {s.path: s.state for s in self._subsystems}

    async def _check(self, request: CheckServices) -> ServicesStatus:
        return ServicesStatus(dc_uuid=self._dc_uuid, services=self.services())

    def heartbeat(self) -> Heartbeat:
        self._sequence += 1
        return Heartbeat(
            dc_uuid=self._dc_uuid,
            name=self._name,
            sequence=self._sequence,
            started_at=self._started_at,
            sent_at=datetime.now(UTC),
            http_url=self._http_url(),
            services=self.services(),
        )

    async def _beat(self) -> None:
        while True:
            await self._bus.publish(self.heartbeat())
            await asyncio.sleep(self._interval)

    async def _on_change(self, change: SubsystemStateChanged) -> None:
        # Central should not wait for the next beat to learn that a service came up or
        # went down: a state change is followed by a heartbeat at once.
        await self._bus.publish(self.heartbeat())

    async def start(self) -> None:
        self._unserve = self._bus.serve(CheckServices, self._check)
        self._unsubscribe = self._bus.subscribe(
            SubsystemStateChanged, self._on_change, name="status.on_change"
        )
        self._tasks.spawn(self._beat(), name="heartbeat", forever=True)

    async def close(self) -> None:
        await self._tasks.close()
        for undo in (self._unserve, self._unsubscribe):
            if undo is not None:
                undo()
        self._unserve = self._unsubscribe = None
