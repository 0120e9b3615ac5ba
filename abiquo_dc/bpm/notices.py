"""What central is told of its conversion requests: ConversionStateChanged on the bus,
which the link sends on to abiquo.datacenter.notifications.

Only central's requests (ConvertTemplateDisk) are told; vfactory's are answered on the
bus instead. A FAILED one carries "<code>: <message>", a DONE one the converted disk's
path relative to the repository.
"""

from __future__ import annotations

from datetime import UTC, datetime

from abiquo_dc.bpm.conversions import Conversion
from abiquo_dc.bpm.journal import Outcome
from abiquo_dc.bus import Bus
from abiquo_dc.protocol.definitions import DiskFormat
from abiquo_dc.protocol.templates import ConversionState, ConversionStateChanged


class Notices:
    def __init__(self, *, bus: Bus, dc_uuid: str) -> None:
        self.bus = bus
        self.dc_uuid = dc_uuid

    async def tell(self, conversion: Conversion, state: ConversionState) -> None:
        """Every request of `conversion` that central made, of its new state."""
        for asker in list(conversion.askers.values()):
            if asker.request.notify:
                await self.send(
                    asker.request.id,
                    state,
                    conversion.target_format,
                    progress=conversion.progress,
                )

    async def outcome(self, request_id: str, outcome: Outcome) -> None:
        done = outcome.state is ConversionState.DONE
        await self.send(
            request_id,
            outcome.state,
            outcome.target_format,
            progress=100.0 if done else 0.0,
            target_path=outcome.detail if done else "",
            error=outcome.detail if outcome.state is ConversionState.FAILED else "",
        )

    async def send(
        self,
        request_id: str,
        state: ConversionState,
        target_format: DiskFormat,
        *,
        progress: float = 0.0,
        target_path: str = "",
        error: str = "",
    ) -> None:
        await self.bus.publish(
            ConversionStateChanged(
                dc_uuid=self.dc_uuid,
                conversion_id=request_id,
                state=state,
                progress=round(progress, 2),
                target_path=target_path,
                target_format=target_format,
                error=error,
                at=datetime.now(UTC),
            )
        )
