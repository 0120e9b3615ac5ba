"""Latency from a VM's change on its host to the VSM's published event, at scale.

The Virtual System Monitor (abiquo_dc.vsm) of one DC watches N simulated hosts with M VMs
each (1,000 x 20 by default), every VM subscribed as central would (believed OFF), over
a real RedisStore on the local Redis (its keys under a prefix made for the run, deleted
at the end). Once every host's first listing has been handled (each VM known in Redis,
every host's event stream open, nothing published for a while), a share of the VMs (5%,
spread over the hosts) is powered on with the simulator's `set_power`, all at once by
default (or at `--rate` a second), and each change is timed until the VSM publishes its
POWER_ON:

- straight (the default): `publish` is the notifier's send, and the event is published
  when the send is called (what the VSM adds, without a broker);
- `--rabbitmq URL`: `publish` is DatacenterLink.send on an AmqpTransport, as abiquo-dc
  runs it (persistent, confirmed): both the confirm (send returned) and the arrival on
  abiquo.datacenter.events (consumed here, acknowledged) are timed. The queue is purged
  first and everything on it consumed: give a vhost nothing else uses. The request
  queues the link declares for the run's DC are deleted at the end; the
  MonitoringStateLost of the fresh store is not sent (nobody would take it).

A probe of single changes, one at a time, each waited for, follows: the VSM's latency
unloaded.

Printed beside a floor measured in the same run (the machines are shared and noisy): a
bare Redis pub/sub round trip through the same client library (redis-py on hiredis, the
store's connection options and its way of reading the channel), a message published and
timed until a subscriber in this process has it: one at a time (the probe's floor), and
with the changes' pattern, each message from a task of its own (as each host's monitor
publishes), all at once or at the same rate. The floor's connection pool is warmed and
large enough for the pattern: it is the best Redis pub/sub does here. The VSM's p50 and
p99 are given as ratios to the floor's.

CPU is this process's (time.process_time: the DC, the simulated hosts, with --rabbitmq
the consumer too) from the first change to the last event, per 1,000 events; the Redis
server's own CPU over the same span (its INFO cpu, user + sys: whatever else uses that
Redis is counted in) beside it, and the connections Redis accepted meanwhile. Memory:
this process's resident set (VmRSS) at each step of the set-up, after the first burst
of changes and at the end, and its peak (ru_maxrss); Redis's used_memory.

The store's Redis connections: the monitors hand their observations to one writer, and
the store's pool is a blocking one of a few connections (callers past it wait), as the
DC runs it. `--max-connections N` puts redis-py's max_connections=N in the store's URL,
to try other pool sizes.

Every changed VM must have had exactly one POWER_ON, nothing else may have been
published (but the MonitoringStateLost of a fresh store at start), and nothing may have
been logged as a warning once the monitors settled, or the exit status is 1. `--repeat`
runs the rounds again on the same monitors, each on VMs not changed before (the first
round's burst opens the store's connections; the later ones find them open);
`--profile setup|changes` prints where the set-up's, or the first burst's, time goes.

The event loop is uvloop, as abiquo-dc runs (abiquo_runtime.process.run_service); what
exists once the monitors settled is frozen out of the collector's sight, as serve does
once the program started.

    .venv/bin/python bench/vsm.py [--hosts N] [--vms-per-host N] [--change F] [--rate R]
        [--probe N] [--repeat N] [--redis URL] [--rabbitmq URL] [--max-connections N]
        [--loop uvloop|asyncio] [--profile setup|changes] [--timeout S]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import logging
import math
import pstats
import resource
import statistics
import sys
import tempfile
import time
import uuid as uuidlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio as redis
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from abiquo_dc.bus import Bus
from abiquo_dc.hypervisors.base import Driver, PowerState
from abiquo_dc.hypervisors.registry import open_driver
from abiquo_dc.hypervisors.simulator import SimulatedCloud, SimulatedHost
from abiquo_dc.link import DatacenterLink
from abiquo_dc.protocol import codec
from abiquo_dc.protocol.definitions import (
    HypervisorConnection,
    HypervisorType,
    VirtualMachineDefinition,
)
from abiquo_dc.protocol.jobs import ObservedState
from abiquo_dc.protocol.messages import Message, ServiceState
from abiquo_dc.protocol.monitoring import (
    MonitoredHost,
    MonitoringStateLost,
    Subscription,
    VmEventKind,
    VmStateChanged,
)
from abiquo_dc.protocol.queues import EVENTS, outbound_specs, request_specs
from abiquo_dc.settings import VsmSettings
from abiquo_dc.vsm.redis_store import RedisStore
from abiquo_dc.vsm.service import VirtualSystemMonitor
from abiquo_runtime.logs import configure_logging
from abiquo_runtime.messaging.transport import Delivery
from abiquo_runtime.settings import LogSettings

# The connection options of the store's client (RedisStore.open).
REDIS_OPTIONS: dict[str, Any] = {
    "socket_timeout": 10,
    "socket_connect_timeout": 5,
    "health_check_interval": 15,
}
# How long nothing may be published before the listings, or a run, count as over.
QUIET = 1.0


def with_pool_size(url: str, max_connections: int) -> str:
    """`url` with redis-py's max_connections set to `max_connections` (0: as it is)."""
    if max_connections <= 0:
        return url
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "max_connections"]
    query.append(("max_connections", str(max_connections)))
    return urlunsplit(parts._replace(query=urlencode(query)))


def host_address(i: int) -> str:
    return f"10.2.{i // 250}.{i % 250 + 1}"


def rss_kib() -> int:
    """This process's resident set now (VmRSS), in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def peak_rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def mib(kib: float) -> str:
    return f"{kib / 1024:,.1f} MiB"


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile (q in 0..100) of `values`."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


async def sleep_until(moment: float) -> None:
    delay = moment - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)


class Warnings(logging.Handler):
    """The warnings logged, counted by what they say."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.msg
        if isinstance(message, dict):  # structlog's event dict
            what = str(message.get("event", ""))
            if "error" in message:
                what += f" ({str(message['error'])[:60]})"
        else:
            what = record.getMessage()[:100]
        self.seen[what] += 1

    def take(self) -> Counter[str]:
        seen, self.seen = self.seen, Counter()
        return seen

    def describe(self) -> str:
        return "; ".join(f"{n:,} x {w}" for w, n in self.seen.most_common()) or "none"


# -- measuring -------------------------------------------------------------------------


class RedisInfo:
    """The Redis server's own figures, through the bench's own client."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    async def cpu(self) -> float:
        info = await self.client.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    async def memory(self) -> int:
        return int((await self.client.info("memory"))["used_memory"])

    async def clients(self) -> int:
        return int((await self.client.info("clients"))["connected_clients"])

    async def connections_received(self) -> int:
        return int((await self.client.info("stats"))["total_connections_received"])


@dataclass(frozen=True)
class Usage:
    """CPU so far: this process's and the Redis server's; connections Redis accepted."""

    cpu: float
    redis_cpu: float
    connections: int

    @staticmethod
    async def now(info: RedisInfo) -> Usage:
        connections = await info.connections_received()
        redis_cpu = await info.cpu()
        return Usage(time.process_time(), redis_cpu, connections)


@dataclass
class Sample:
    """A timed series: each item's latency; the span's wall time, CPU and connections."""

    name: str
    latencies: list[float]
    wall: float
    cpu: float
    redis_cpu: float
    connections: int

    @staticmethod
    def of(name: str, latencies: list[float], wall: float, start: Usage, end: Usage) -> Sample:
        return Sample(
            name,
            latencies,
            wall,
            end.cpu - start.cpu,
            end.redis_cpu - start.redis_cpu,
            end.connections - start.connections,
        )

    @property
    def count(self) -> int:
        return len(self.latencies)

    def p(self, q: float) -> float:
        return percentile(self.latencies, q)

    @property
    def rate(self) -> float:
        return self.count / self.wall

    def cpu_per_1000(self) -> float:
        return 1000 * self.cpu / self.count

    def redis_cpu_per_1000(self) -> float:
        return 1000 * self.redis_cpu / self.count

    def line(self) -> str:
        return (
            f"{self.name:<44} p50 {1000 * self.p(50):9.3f} ms  p99 {1000 * self.p(99):9.3f} ms"
            f"  max {1000 * max(self.latencies):9.3f} ms  {self.rate:>8,.0f}/s"
            f"  CPU s/1,000: {self.cpu_per_1000():6.3f} (Redis {self.redis_cpu_per_1000():5.3f})"
            f"  {self.connections:,} new connections"
        )


# -- the floor: a bare Redis pub/sub round trip ------------------------------------------


class Floor:
    """A message published on a channel, timed until a subscriber here has it."""

    def __init__(self, url: str, channel: str, info: RedisInfo, pool_size: int) -> None:
        self.channel = channel
        self.info = info
        self.publisher = redis.Redis.from_url(with_pool_size(url, pool_size), **REDIS_OPTIONS)
        self.subscriber = redis.Redis.from_url(url, **REDIS_OPTIONS)
        self.pubsub = self.subscriber.pubsub(ignore_subscribe_messages=True)
        self._reader: asyncio.Task[None] | None = None
        self._waiting: dict[int, asyncio.Future[float]] = {}
        self._serial = 0
        self._warm = False

    async def open(self) -> None:
        await self.pubsub.subscribe(self.channel)
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        await self.pubsub.aclose()  # type: ignore[no-untyped-call]
        await self.publisher.aclose()
        await self.subscriber.aclose()

    async def _read(self) -> None:
        # As the store reads its channel (RedisStore.listen).
        while True:
            message = await self.pubsub.get_message(timeout=1.0)
            if message is not None and message["type"] == "message":
                at = time.perf_counter()
                waiter = self._waiting.pop(int(message["data"]), None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(at)

    def _expect(self) -> tuple[int, asyncio.Future[float]]:
        self._serial += 1
        waiter = asyncio.get_running_loop().create_future()
        self._waiting[self._serial] = waiter
        return self._serial, waiter

    async def _publish(self, serial: int) -> None:
        await self.publisher.publish(self.channel, str(serial))

    async def sequential(self, n: int) -> Sample:
        latencies = []
        start = await Usage.now(self.info)
        began = time.perf_counter()
        for _ in range(n):
            serial, waiter = self._expect()
            sent = time.perf_counter()
            await self._publish(serial)
            latencies.append(await asyncio.wait_for(waiter, 10) - sent)
        wall = time.perf_counter() - began
        end = await Usage.now(self.info)
        return Sample.of("floor: Redis pub/sub, one at a time", latencies, wall, start, end)

    async def pattern(self, n: int, rate: float) -> Sample:
        """n messages, each published from a task of its own, all at once or at `rate` a
        second (the first time, once more before, to open the pool's connections)."""
        if not self._warm:
            self._warm = True
            await self.pattern(n, rate)
        sends: list[tuple[float, asyncio.Future[float]]] = []
        publishing: list[asyncio.Task[None]] = []
        loop = asyncio.get_running_loop()
        start = await Usage.now(self.info)
        began = time.perf_counter()
        for i in range(n):
            if rate > 0:
                await sleep_until(began + i / rate)
            serial, waiter = self._expect()
            sends.append((time.perf_counter(), waiter))
            publishing.append(loop.create_task(self._publish(serial)))
        try:
            await asyncio.wait_for(asyncio.gather(*publishing), 60)
        except Exception as exc:
            raise SystemExit(f"the floor's publish failed: {exc!r}") from exc
        arrivals = await asyncio.wait_for(asyncio.gather(*(w for _, w in sends)), 60)
        wall = max(arrivals) - began
        end = await Usage.now(self.info)
        latencies = [arrived - sent for (sent, _), arrived in zip(sends, arrivals, strict=True)]
        return Sample.of(f"floor: Redis pub/sub, {pattern(n, rate)}", latencies, wall, start, end)


def pattern(n: int, rate: float) -> str:
    return f"{n:,} all at once" if rate <= 0 else f"{n:,} at {rate:,.0f}/s"


# -- what the VSM publishes --------------------------------------------------------------


@dataclass
class Heard:
    """Every message the VSM published (or that arrived from the broker), and when."""

    name: str
    dc_uuid: str
    by_vm: dict[str, Counter[VmEventKind]] = field(default_factory=dict)
    powered_on: dict[str, float] = field(default_factory=dict)
    state_lost: int = 0
    others: Counter[str] = field(default_factory=Counter)
    _pending: set[str] = field(default_factory=set)
    _all_in: asyncio.Event = field(default_factory=asyncio.Event)

    def record(self, message: Message, at: float) -> None:
        if isinstance(message, MonitoringStateLost) and message.dc_uuid == self.dc_uuid:
            self.state_lost += 1
            return
        if not isinstance(message, VmStateChanged) or message.dc_uuid != self.dc_uuid:
            self.others[type(message).__name__] += 1
            return
        self.by_vm.setdefault(message.vm_uuid, Counter())[message.event] += 1
        if message.event is VmEventKind.POWER_ON:
            self.powered_on.setdefault(message.vm_uuid, at)
            if message.vm_uuid in self._pending:
                self._pending.discard(message.vm_uuid)
                if not self._pending:
                    self._all_in.set()

    def events(self) -> int:
        return sum(sum(c.values()) for c in self.by_vm.values())

    def watch(self, uuids: list[str]) -> None:
        """Expect a POWER_ON of each of `uuids` (see wait)."""
        self._pending = {u for u in uuids if u not in self.powered_on}
        self._all_in = asyncio.Event()
        if not self._pending:
            self._all_in.set()

    async def wait(self, timeout: float, warnings: Warnings) -> None:
        try:
            await asyncio.wait_for(self._all_in.wait(), timeout)
        except TimeoutError:
            raise SystemExit(
                f"{self.name}: {len(self._pending):,} POWER_ON events missing after "
                f"{timeout} s; warnings: {warnings.describe()}"
            ) from None

    def problems(self, changed: list[str]) -> list[str]:
        found = []
        expected = Counter({VmEventKind.POWER_ON: 1})
        for uuid in changed:
            got = self.by_vm.get(uuid, Counter())
            if got != expected:
                said = ", ".join(f"{n} {k.value}" for k, n in got.items()) or "nothing"
                found.append(f"{self.name}: VM {uuid} powered on once, got {said}")
        unchanged = sorted(set(self.by_vm) - set(changed))
        for uuid in unchanged[:10]:
            said = ", ".join(f"{n} {k.value}" for k, n in self.by_vm[uuid].items())
            found.append(f"{self.name}: VM {uuid} not changed, got {said}")
        if len(unchanged) > 10:
            found.append(f"{self.name}: {len(unchanged) - 10:,} more unchanged VMs had events")
        if self.others:
            found.append(f"{self.name}: other messages: {dict(self.others)}")
        return found


# -- the path to the broker (--rabbitmq) -------------------------------------------------


class Rabbit:
    """The DC's link publishing to RabbitMQ, and central's side consuming the events."""

    def __init__(self, url: str, dc_uuid: str, arrived: Heard) -> None:
        from abiquo_runtime.messaging.amqp import AmqpTransport

        self.url = url
        self.dc_uuid = dc_uuid
        self.arrived = arrived
        # A bus of its own: only what the VSM sends goes to the broker.
        self.bus = Bus(name="bench.link")
        self.link = DatacenterLink(
            transport=AmqpTransport(url, connection_name="bench-vsm dc"),
            bus=self.bus,
            dc_uuid=dc_uuid,
        )
        self.central = AmqpTransport(url, connection_name="bench-vsm central")

    async def open(self) -> None:
        await self.link.start()
        await self._admin(purge=True)
        await self.central.connect()
        await self.central.declare(next(s for s in outbound_specs() if s.name == EVENTS))
        await self.central.consume(EVENTS, self._on_delivery, prefetch=256)

    async def _on_delivery(self, delivery: Delivery) -> None:
        at = time.perf_counter()
        self.arrived.record(codec.decode(delivery.body, VmStateChanged), at)
        await delivery.ack()

    async def send(self, message: Message) -> None:
        await self.link.send(message)

    async def close(self) -> None:
        await self.link.close()
        await self.bus.close()
        await self.central.close()
        await self._admin(purge=False)

    async def _admin(self, *, purge: bool) -> None:
        """Purge the events queue (before), or delete the run's request queues (after)."""
        import aio_pika

        connection = await aio_pika.connect(self.url)
        try:
            channel = await connection.channel()
            if purge:
                queue = await channel.declare_queue(EVENTS, passive=True)
                await queue.purge()
                return
            for spec in request_specs(self.dc_uuid):
                await channel.queue_delete(spec.name)
                if spec.dead_letter:
                    await channel.queue_delete(spec.dead_letter_queue)
        finally:
            await connection.close()


# -- the monitored datacenter ------------------------------------------------------------


@dataclass
class Setup:
    """What the set-up cost: seconds and resident memory at each step."""

    steps: list[tuple[str, float, int]] = field(default_factory=list)
    _at: float = field(default_factory=time.perf_counter)

    def step(self, name: str) -> None:
        now = time.perf_counter()
        self.steps.append((name, now - self._at, rss_kib()))
        self._at = now


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.dc_uuid = str(uuidlib.uuid4())
        self.prefix = f"abiquo-bench-vsm-{uuidlib.uuid4().hex[:8]}:"
        self.pool_size = args.max_connections or 0
        self.store_url = with_pool_size(args.redis, self.pool_size)
        self.settings = VsmSettings()
        self.cloud = SimulatedCloud()
        self.hosts: list[SimulatedHost] = []
        # Each host's VMs by slot: the changes take slot 0 of every host, then slot 1...
        self.vms: list[list[str]] = []
        self.host_of: dict[str, SimulatedHost] = {}
        self.published = Heard("published", self.dc_uuid)
        self.arrived = Heard("arrived from RabbitMQ", self.dc_uuid)
        self.rabbit: Rabbit | None = None
        self.admin = redis.Redis.from_url(args.redis, **REDIS_OPTIONS)
        self.info = RedisInfo(self.admin)
        self.vsm: VirtualSystemMonitor | None = None
        self.warnings = Warnings()
        self.changed: list[str] = []
        self._next = 0

    # -- set-up --------------------------------------------------------------------------

    def build_cloud(self) -> None:
        for i in range(self.args.hosts):
            host = self.cloud.add_host(host_address(i))
            self.hosts.append(host)
            uuids = []
            for slot in range(self.args.vms_per_host):
                definition = VirtualMachineDefinition(
                    uuid=str(uuidlib.uuid4()), name=f"bench-{i}-{slot}", cpu=1, ram_mb=512
                )
                host.add_vm(definition)
                uuids.append(definition.uuid)
                self.host_of[definition.uuid] = host
            self.vms.append(uuids)

    def opener(self, connection: HypervisorConnection) -> Driver:
        # As abiquo-dc opens drivers with the simulator enabled (app.driver_opener).
        return open_driver(connection, simulator=self.cloud, timeout=self.settings.driver_timeout)

    async def publish(self, message: Message) -> None:
        if self.rabbit is not None and isinstance(message, VmStateChanged):
            await self.rabbit.send(message)
        self.published.record(message, time.perf_counter())

    async def start(self, state_dir: Path, setup: Setup) -> VirtualSystemMonitor:
        if self.args.rabbitmq:
            self.rabbit = Rabbit(self.args.rabbitmq, self.dc_uuid, self.arrived)
            await self.rabbit.open()
        vsm = VirtualSystemMonitor(
            bus=Bus(name="bench.bus"),
            dc_uuid=self.dc_uuid,
            store=lambda: RedisStore(self.store_url, prefix=self.prefix, dc_uuid=self.dc_uuid),
            opener=self.opener,
            publish=self.publish,
            state_dir=state_dir,
            settings=self.settings,
        )
        self.vsm = vsm
        await vsm.start()
        await vsm.wait_running(30)
        setup.step("VSM running (a fresh store: its epoch written)")
        subscriptions = [
            Subscription(
                vm_uuid=uuid,
                vm_name=f"bench-{i}-{slot}",
                host=host.address,
                state=ObservedState.OFF,
            )
            for i, (host, uuids) in enumerate(zip(self.hosts, self.vms, strict=True))
            for slot, uuid in enumerate(uuids)
        ]
        await vsm.subscribe(subscriptions)
        setup.step(f"{len(subscriptions):,} VMs subscribed")
        return vsm

    async def monitor_all(self, vsm: VirtualSystemMonitor, setup: Setup) -> None:
        for host in self.hosts:
            await vsm.monitor_host(MonitoredHost(address=host.address, type=HypervisorType.KVM))
        setup.step(f"monitor_host x {len(self.hosts):,} returned")
        await self.settled(vsm)
        setup.step("settled: all VMs known in Redis, all event streams open")

    async def settled(self, vsm: VirtualSystemMonitor) -> None:
        """Wait until every host's listing was handled and nothing more is published."""
        assert vsm.notifier is not None
        known_key = f"{self.prefix}vsm:{self.dc_uuid}:known"
        total = len(self.host_of)
        deadline = time.perf_counter() + self.args.timeout
        while True:
            known = await self.admin.hlen(known_key)
            # The monitor's event stream is open on its host (the simulator's subscriber).
            streams = sum(bool(host._subscribers) for host in self.hosts)
            connected = all(m.connected for m in vsm.monitors.values())
            listed = known == total and streams == len(self.hosts) and connected
            if listed and not vsm.notifier.backlog():
                break
            if time.perf_counter() > deadline:
                raise SystemExit(
                    f"not settled after {self.args.timeout} s: {known:,} of {total:,} VMs "
                    f"known, {streams:,} event streams open; "
                    f"warnings: {self.warnings.describe()}"
                )
            await asyncio.sleep(0.05)
        events = self.published.events()
        await asyncio.sleep(QUIET)
        if self.published.events() != events:
            raise SystemExit("events were still being published after the listings")

    # -- the rounds ------------------------------------------------------------------------

    def take(self, n: int) -> list[str]:
        """The next n VMs not changed yet, spread over the hosts (slot by slot)."""
        hosts = len(self.vms)
        if self._next + n > len(self.host_of):
            raise SystemExit("not enough VMs left unchanged for the rounds asked")
        chosen = []
        for k in range(self._next, self._next + n):
            slot, host = divmod(k, hosts)
            chosen.append(self.vms[host][slot])
        self._next += n
        self.changed += chosen
        return chosen

    async def changes(self, uuids: list[str], rate: float) -> list[Sample]:
        """Power on `uuids` (all at once, or at `rate` a second); time each to its event."""
        self.published.watch(uuids)
        self.arrived.watch(uuids if self.rabbit is not None else [])
        changed: dict[str, float] = {}
        start = await Usage.now(self.info)
        began = time.perf_counter()
        for i, uuid in enumerate(uuids):
            if rate > 0:
                await sleep_until(began + i / rate)
            changed[uuid] = time.perf_counter()
            self.host_of[uuid].set_power(uuid, PowerState.ON)
        await self.published.wait(self.args.timeout, self.warnings)
        await self.arrived.wait(self.args.timeout, self.warnings)
        end = await Usage.now(self.info)
        samples = []
        for heard in (self.published, self.arrived) if self.rabbit else (self.published,):
            at = [heard.powered_on[u] for u in uuids]
            latencies = [a - changed[u] for u, a in zip(uuids, at, strict=True)]
            name = f"VSM: {pattern(len(uuids), rate)}, {heard.name.split()[0]}"
            samples.append(Sample.of(name, latencies, max(at) - began, start, end))
        return samples

    async def probe(self, uuids: list[str]) -> list[Sample]:
        """One change at a time, each waited for: the VSM's latency unloaded."""
        published: list[float] = []
        arrived: list[float] = []
        start = await Usage.now(self.info)
        began = time.perf_counter()
        for uuid in uuids:
            self.published.watch([uuid])
            self.arrived.watch([uuid] if self.rabbit is not None else [])
            changed = time.perf_counter()
            self.host_of[uuid].set_power(uuid, PowerState.ON)
            await self.published.wait(10, self.warnings)
            await self.arrived.wait(10, self.warnings)
            published.append(self.published.powered_on[uuid] - changed)
            if self.rabbit is not None:
                arrived.append(self.arrived.powered_on[uuid] - changed)
        wall = time.perf_counter() - began
        end = await Usage.now(self.info)
        samples = [Sample.of("VSM: one at a time, published", published, wall, start, end)]
        if arrived:
            samples.append(Sample.of("VSM: one at a time, arrived", arrived, wall, start, end))
        return samples

    async def close(self) -> None:
        if self.vsm is not None:
            await self.vsm.stop()
        if self.rabbit is not None:
            await self.rabbit.close()
        await self.cloud.close()
        deleted = 0
        async for key in self.admin.scan_iter(match=f"{self.prefix}*", count=1000):
            deleted += await self.admin.unlink(key)
        await self.admin.aclose()
        print(f"\nRedis: {deleted:,} keys under {self.prefix} deleted")


# -- the run ---------------------------------------------------------------------------


@dataclass
class Round:
    floor_sequential: Sample
    floor_pattern: Sample
    # Published, then (--rabbitmq) arrived.
    changes: list[Sample]
    probe: list[Sample]
    # After the changes (before the floor's pattern opened its connections).
    rss_kib: int
    redis_clients: int


class Profile:
    """cProfile around a part of the run, printed by where the time goes."""

    def __init__(self, enabled: bool) -> None:
        self.profile = cProfile.Profile() if enabled else None

    def __enter__(self) -> Profile:
        if self.profile is not None:
            self.profile.enable()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.profile is None:
            return
        self.profile.disable()
        out = io.StringIO()
        stats = pstats.Stats(self.profile, stream=out)
        stats.sort_stats("tottime").print_stats(30)
        stats.sort_stats("cumulative").print_stats(40)
        print(out.getvalue())


async def run_round(bench: Bench, floor: Floor, n: int, first: bool) -> Round:
    args = bench.args
    floor_sequential = await floor.sequential(args.floor_trips)
    with Profile(first and args.profile == "changes"):
        changes = await bench.changes(bench.take(n), args.rate)
    rss, clients = rss_kib(), await bench.info.clients()
    probe = await bench.probe(bench.take(args.probe)) if args.probe else []
    floor_pattern = await floor.pattern(n, args.rate)
    return Round(floor_sequential, floor_pattern, changes, probe, rss, clients)


def ratios(name: str, vsm: Sample, floor: Sample) -> str:
    return (
        f"{name:<44} p50 {vsm.p(50) / floor.p(50):9.1f} x   p99 {vsm.p(99) / floor.p(99):9.1f} x"
        f"   CPU/1,000 {vsm.cpu_per_1000() / floor.cpu_per_1000():6.1f} x"
        f" (Redis {vsm.redis_cpu_per_1000() / max(floor.redis_cpu_per_1000(), 1e-9):5.1f} x)"
    )


def print_round(number: int, r: Round) -> None:
    print(f"\nround {number}:")
    for sample in (r.floor_pattern, *r.changes, r.floor_sequential, *r.probe):
        print("  " + sample.line())
    for sample in r.changes:
        print("  " + ratios(f"{sample.name} ÷ floor", sample, r.floor_pattern))
    for sample in r.probe:
        print("  " + ratios(f"{sample.name} ÷ floor", sample, r.floor_sequential))


def summary(rounds: list[Round]) -> None:
    def row(name: str, values: list[float], unit: str) -> None:
        each = ", ".join(f"{v:,.3f}" for v in values)
        print(f"  {name:<52} {statistics.median(values):>10,.3f} {unit:<3} ({each})")

    print(f"\nmedians of {len(rounds)} round(s) (each round's in brackets):")
    first = rounds[0]
    for i, sample in enumerate(first.changes):
        what = sample.name.rsplit(", ", 1)[1]
        series = [r.changes[i] for r in rounds]
        row(f"VSM changes p50 ({what})", [1000 * s.p(50) for s in series], "ms")
        row(f"VSM changes p99 ({what})", [1000 * s.p(99) for s in series], "ms")
        row(f"VSM changes max ({what})", [1000 * max(s.latencies) for s in series], "ms")
        row(f"VSM events/s ({what})", [s.rate for s in series], "/s")
    floors = [r.floor_pattern for r in rounds]
    row("floor, same pattern: p50", [1000 * s.p(50) for s in floors], "ms")
    row("floor, same pattern: p99", [1000 * s.p(99) for s in floors], "ms")
    for i, sample in enumerate(first.changes):
        what = sample.name.rsplit(", ", 1)[1]
        pairs = [(r.changes[i], r.floor_pattern) for r in rounds]
        row(f"VSM ÷ floor p50 ({what})", [v.p(50) / f.p(50) for v, f in pairs], "x")
        row(f"VSM ÷ floor p99 ({what})", [v.p(99) / f.p(99) for v, f in pairs], "x")
    changes = [r.changes[0] for r in rounds]
    row("VSM CPU s per 1,000 events, this process", [s.cpu_per_1000() for s in changes], "s")
    row("VSM CPU s per 1,000 events, Redis server", [s.redis_cpu_per_1000() for s in changes], "s")
    row("floor CPU s per 1,000, this process", [s.cpu_per_1000() for s in floors], "s")
    row("floor CPU s per 1,000, Redis server", [s.redis_cpu_per_1000() for s in floors], "s")
    if first.probe:
        sequential = [r.floor_sequential for r in rounds]
        probes = [r.probe[0] for r in rounds]
        row("VSM one at a time p50 (published)", [1000 * s.p(50) for s in probes], "ms")
        row("VSM one at a time p99 (published)", [1000 * s.p(99) for s in probes], "ms")
        row("floor one at a time p50", [1000 * s.p(50) for s in sequential], "ms")
        row("floor one at a time p99", [1000 * s.p(99) for s in sequential], "ms")
        pairs = list(zip(probes, sequential, strict=True))
        row("VSM ÷ floor p50, one at a time", [v.p(50) / f.p(50) for v, f in pairs], "x")
        row("VSM ÷ floor p99, one at a time", [v.p(99) / f.p(99) for v, f in pairs], "x")


async def main(args: argparse.Namespace) -> int:
    configure_logging(LogSettings(level="warning"), program="bench-vsm")
    bench = Bench(args)
    logging.getLogger().addHandler(bench.warnings)
    info = bench.info
    n = round(args.hosts * args.vms_per_host * args.change)
    if n < 1:
        raise SystemExit("--change leaves no VM to change")
    if (n + args.probe) * args.repeat > args.hosts * args.vms_per_host:
        raise SystemExit("fewer VMs than the rounds change: less --change, --probe or --repeat")
    setup = Setup()
    setup.step("started")
    redis_memory = await info.memory()
    bench.build_cloud()
    setup.step(f"{args.hosts:,} simulated hosts, {len(bench.host_of):,} VMs built")
    floor = Floor(args.redis, f"{bench.prefix}floor", info, pool_size=n + 100)
    await floor.open()
    problems: list[str] = []
    rounds: list[Round] = []
    try:
        with tempfile.TemporaryDirectory(prefix="abiquo-bench-vsm-") as state_dir:
            vsm = await bench.start(Path(state_dir), setup)
            connections = await info.connections_received()
            with Profile(args.profile == "setup"):
                await bench.monitor_all(vsm, setup)
            setup_connections = await info.connections_received() - connections
            setup_warnings = bench.warnings.take()
            settled_clients, settled_memory = await info.clients(), await info.memory()
            # What exists now lives as long as the monitors: out of the collector's sight.
            gc.collect()
            gc.freeze()
            for number in range(1, args.repeat + 1):
                rounds.append(await run_round(bench, floor, n, first=number == 1))
                print_round(number, rounds[-1])
            await asyncio.sleep(QUIET)
            assert vsm.notifier is not None
            notifier = vsm.notifier
            problems += [f"warned {c:,} x {w}" for w, c in bench.warnings.take().items()]
            problems += bench.published.problems(bench.changed)
            if bench.rabbit is not None:
                problems += bench.arrived.problems(bench.changed)
            if bench.published.state_lost != 1:
                problems.append(f"{bench.published.state_lost} MonitoringStateLost, not 1")
            if notifier.dropped or notifier.overflowed:
                problems.append(
                    f"notifier: {notifier.dropped} observations of VMs not subscribed, "
                    f"{notifier.overflowed} events past its buffer"
                )
            if vsm.state is not ServiceState.RUNNING:
                problems.append(f"the VSM is {vsm.state.value}: {vsm.reason}")
    finally:
        await floor.close()
        await bench.close()

    print(
        f"\n{args.hosts:,} hosts x {args.vms_per_host} VMs; each round {pattern(n, args.rate)} "
        f"powered on, then {args.probe} one at a time; publish "
        f"{'through the link to RabbitMQ' if args.rabbitmq else 'straight'}; {args.loop}; "
        f"the store's redis-py pool: max_connections "
        f"{bench.pool_size or 'the store default (a blocking pool)'}"
    )
    print("\nset-up:")
    for name, seconds, rss in setup.steps:
        print(f"  {name:<58} {seconds:7.2f} s   RSS {mib(rss):>10}")
    before = next(rss for name, _, rss in setup.steps if name.endswith("subscribed"))
    after = setup.steps[-1][2]
    print(
        f"  the monitors' own: {mib(after - before)} ({(after - before) / args.hosts:,.1f} KiB "
        f"a host); {setup_connections:,} connections to Redis opened, {settled_clients:,} "
        f"clients connected once settled"
    )
    for what, count in setup_warnings.most_common():
        print(f"  warned: {count:,} x {what}")
    print("\nmemory:")
    print(
        f"  RSS after the first round's changes {mib(rounds[0].rss_kib)} "
        f"({rounds[0].redis_clients:,} clients connected to Redis then), at the end "
        f"{mib(rss_kib())}, peak (ru_maxrss) {mib(peak_rss_kib())}"
    )
    print(
        f"  Redis used_memory: {redis_memory / 2**20:,.1f} MiB before, "
        f"{settled_memory / 2**20:,.1f} MiB once settled"
    )
    summary(rounds)
    if problems:
        print(f"\nFAILED: {len(problems)} problems", file=sys.stderr)
        for problem in problems[:20]:
            print(f"  {problem}", file=sys.stderr)
        return 1
    print(
        "\nchecked: every changed VM had exactly one POWER_ON"
        + (" (published and arrived)" if args.rabbitmq else "")
        + ", nothing else was published, no warning once settled"
    )
    return 0


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--vms-per-host", type=int, default=20)
    parser.add_argument("--change", type=float, default=0.05, help="share of the VMs a round")
    parser.add_argument("--rate", type=float, default=0.0, help="changes a second (0: at once)")
    parser.add_argument("--probe", type=int, default=100, help="changes one at a time a round")
    parser.add_argument("--floor-trips", type=int, default=1000, help="floor one at a time")
    parser.add_argument("--repeat", type=int, default=3, help="rounds on the same monitors")
    parser.add_argument("--redis", metavar="URL", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--rabbitmq", metavar="URL", help="publish through the link to this")
    parser.add_argument(
        "--max-connections",
        type=int,
        metavar="N",
        help="the store's redis-py pool size in its URL (default: the store's own)",
    )
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds a wait may take")
    parser.add_argument("--profile", choices=("setup", "changes"), help="print a profile")
    args = parser.parse_args()
    if min(args.hosts, args.vms_per_host, args.repeat) < 1 or args.probe < 0:
        parser.error("--hosts, --vms-per-host and --repeat must be at least 1")
    if not 0 < args.change <= 1:
        parser.error("--change is a share: more than 0, at most 1")
    return args


if __name__ == "__main__":
    options = arguments()
    run = uvloop.run if options.loop == "uvloop" else asyncio.run
    raise SystemExit(run(main(options)))
