"""Messages per second through the DC's bus and through the link to central.

Measured in one run, each as a ratio to a bare asyncio.Queue hand-off (one producer, one
consumer) measured in the same run, since these machines are shared and noisy:

- the in-process bus: publish → one listener;
- the link over the in-process broker (all-in-one): a notification published on the DC's
  bus → the DC link → the broker → central's link → its handler;
- the same over RabbitMQ, with publisher confirms, persistent messages and manual acks.

    .venv/bin/python bench/bus.py [--messages N] [--rabbit-messages N] [--no-rabbitmq]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from abiquo_central.link import CentralLink
from abiquo_dc.bus import Bus
from abiquo_dc.link import DatacenterLink
from abiquo_dc.protocol.messages import Message, ServiceState, SubsystemStateChanged
from abiquo_runtime.messaging.transport import Transport


def message(i: int, dc: str = "dc") -> SubsystemStateChanged:
    return SubsystemStateChanged(
        dc_uuid=dc, service="vsm", state=ServiceState.RUNNING, reason=str(i), at=datetime.now(UTC)
    )


async def queue_baseline(n: int) -> float:
    queue: asyncio.Queue[object] = asyncio.Queue(1024)
    items = [message(i) for i in range(n)]

    async def consume() -> None:
        for _ in range(n):
            await queue.get()

    started = time.perf_counter()
    consumer = asyncio.ensure_future(consume())
    for item in items:
        await queue.put(item)
    await consumer
    return n / (time.perf_counter() - started)


async def bus_rate(n: int) -> float:
    bus = Bus(queue_size=1024)
    done = asyncio.Event()
    count = 0

    async def listener(m: SubsystemStateChanged) -> None:
        nonlocal count
        count += 1
        if count == n:
            done.set()

    bus.subscribe(SubsystemStateChanged, listener)
    items = [message(i) for i in range(n)]
    started = time.perf_counter()
    for item in items:
        await bus.publish(item)
    await done.wait()
    elapsed = time.perf_counter() - started
    await bus.close()
    return n / elapsed


async def link_rate(n: int, dc_transport: Transport, central_transport: Transport) -> float:
    dc_uuid = str(uuid.uuid4())
    bus = Bus(queue_size=1024)
    done = asyncio.Event()
    count = 0

    async def on_message(m: Message) -> None:
        nonlocal count
        if isinstance(m, SubsystemStateChanged) and m.dc_uuid == dc_uuid:
            count += 1
            if count == n:
                done.set()

    central = CentralLink(transport=central_transport, on_message=on_message, prefetch=64)
    dc = DatacenterLink(transport=dc_transport, bus=bus, dc_uuid=dc_uuid)
    await central.start()
    await central.accept()
    await dc.start()
    items = [message(i, dc_uuid) for i in range(n)]
    started = time.perf_counter()
    for item in items:
        await bus.publish(item)
    await asyncio.wait_for(done.wait(), 600)
    elapsed = time.perf_counter() - started
    await dc.close()
    await central.close()
    await bus.close()
    return n / elapsed


def rabbitmqctl(*args: str) -> None:
    exe = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    subprocess.run([exe, "-q", *args], check=True, capture_output=True, timeout=60)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--rabbit-messages", type=int, default=3_000)
    parser.add_argument("--no-rabbitmq", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from abiquo_runtime.messaging.memory import MemoryBroker

    baseline = await queue_baseline(args.messages)
    rows = [("asyncio.Queue hand-off (baseline)", baseline)]
    rows.append(("in-process bus", await bus_rate(args.messages)))
    broker = MemoryBroker()
    rows.append(
        (
            "link over the in-process broker",
            await link_rate(args.messages, broker.connection("dc"), broker.connection("central")),
        )
    )
    if not args.no_rabbitmq:
        from abiquo_runtime.messaging.amqp import AmqpTransport

        vhost = f"abiquo-bench-{uuid.uuid4().hex[:8]}"
        rabbitmqctl("add_vhost", vhost)
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        try:
            url = f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
            rate = await link_rate(
                args.rabbit_messages,
                AmqpTransport(url, connection_name="bench dc"),
                AmqpTransport(url, connection_name="bench central"),
            )
            rows.append(("link over RabbitMQ (confirms, persistent, acks)", rate))
        finally:
            rabbitmqctl("delete_vhost", vhost)
        # The baseline again, after: how much the machine drifted during the run.
        rows.append(("asyncio.Queue hand-off (again)", await queue_baseline(args.messages)))

    for name, rate in rows:
        print(f"{name:<50} {rate:>12,.0f} msg/s   ratio {rate / baseline:8.4f}")


if __name__ == "__main__":
    asyncio.run(main())
