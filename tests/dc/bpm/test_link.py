"""Conversion requests as central sends them: on abiquo.datacenter.requests.<dc>.bpm,
through the DC's link (over the in-process broker) to the BPM, and its notifications
back on abiquo.datacenter.notifications."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from abiquo_dc.bus import Bus
from abiquo_dc.link import DatacenterLink
from abiquo_dc.protocol import codec
from abiquo_dc.protocol.definitions import DiskFormat
from abiquo_dc.protocol.envelope import Message
from abiquo_dc.protocol.queues import NOTIFICATIONS, requests_queue
from abiquo_dc.protocol.templates import (
    CancelConversion,
    ConversionState,
    ConversionStateChanged,
    ConvertTemplateDisk,
)
from abiquo_runtime.messaging.memory import MemoryBroker
from abiquo_runtime.messaging.transport import Delivery, Transport
from tests.dc.bpm.harness import (
    MIB,
    repository,
    running_bpm,
    slow_qemu_img,
    temporaries,
    until,
    write_random,
)

BIG = "1/t/big.raw"


@dataclass
class Central:
    """Central's end, bare: it publishes commands and reads the notifications queue."""

    transport: Transport
    dc_uuid: str
    notes: list[ConversionStateChanged] = field(default_factory=list)

    async def send(self, message: Message) -> None:
        await self.transport.publish(
            requests_queue(self.dc_uuid, "bpm"),
            codec.encode(message),
            message_id=uuid.uuid4().hex,
        )

    async def _take(self, delivery: Delivery) -> None:
        # The subsystems' state changes share the queue: only conversions are read here.
        with contextlib.suppress(codec.DecodeError):
            self.notes.append(codec.decode(delivery.body, ConversionStateChanged))
        await delivery.ack()

    def states(self, conversion_id: str) -> list[str]:
        return [n.state.value for n in self.notes if n.conversion_id == conversion_id]


@pytest.fixture
async def central() -> AsyncIterator[tuple[Central, Bus, DatacenterLink]]:
    """Central's end, and the DC's link on a bus (accepting requests is the test's to
    start, once the BPM serves them)."""
    broker = MemoryBroker()
    dc_uuid = str(uuid.uuid4())
    bus = Bus()
    link = DatacenterLink(
        transport=broker.connection("dc"), bus=bus, dc_uuid=dc_uuid, handler_timeout=5
    )
    end = Central(broker.connection("central"), dc_uuid)
    await link.start()
    await end.transport.connect()
    consumer = await end.transport.consume(NOTIFICATIONS, end._take, prefetch=16)
    try:
        yield end, bus, link
    finally:
        await consumer.cancel()
        await link.close()
        await end.transport.close()
        await bus.close()


async def test_a_conversion_asked_on_the_bpm_queue_is_told_to_central(
    central: tuple[Central, Bus, DatacenterLink], tmp_path: Path
) -> None:
    end, bus, link = central
    root = repository(tmp_path / "repo")
    await asyncio.to_thread(write_random, root / BIG, 8 * MIB)
    slow, _ = slow_qemu_img(tmp_path, rate="8M")
    async with running_bpm(root, executable=str(slow), bus=bus) as h:
        await link.accept()
        await end.send(
            ConvertTemplateDisk(
                conversion_id="c-1",
                source_path=BIG,
                source_format=DiskFormat.RAW,
                target_format=DiskFormat.VDI_FLAT,
            )
        )
        await end.send(
            ConvertTemplateDisk(
                conversion_id="c-2",
                source_path=BIG,
                source_format=DiskFormat.RAW,
                target_format=DiskFormat.VHD_FLAT,
            )
        )
        await until(lambda: "START" in end.states("c-1") and "QUEUED" in end.states("c-2"))
        await end.send(CancelConversion(conversion_id="c-1"))
        await until(lambda: "CANCELLED" in end.states("c-1"))
        await until(lambda: "DONE" in end.states("c-2"))
        assert temporaries(root / "1/t/formats/VDI_FLAT") == []
        assert h.bpm.conversions() == []
    done = [n for n in end.notes if n.conversion_id == "c-2"][-1]
    assert done.state is ConversionState.DONE
    assert done.target_path == "1/t/formats/VHD_FLAT/big.vhd"
    assert (root / done.target_path).is_file()
