"""VM deploys per second through a whole datacenter, and its CPU seconds per deploy.

N VMs (one repository disk on the host's datastore /var/lib/virt and one NIC each) are
deployed on M simulated hosts by a complete abiquo-dc, composed by build_datacenter with
the simulator enabled and its job journal a real SQLite file in a temporary directory
(set TMPDIR to put it on another disk). Central's side publishes one VirtualFactoryTask
per VM (CONFIGURE then POWER_ON) to the DC's virtualfactory queue and takes
abiquo.datacenter.notifications through central's own link until every job has its
DONE. Timed from the first publish to the last DONE; CPU is the whole process's over the
same span (time.process_time: every thread, the journal's writer thread included;
getrusage splits it into user and system).

Measured in the same run as a ratio to the baseline of the same configure and power_on
calls made directly on SimulatorDriver instances (one connected driver per host), within
the bounds the DC's settings put on vfactory: max_jobs operations in the datacenter,
max_jobs_per_host on one host. Each ratio is the row's figure divided by the baseline's:
below 1 for deploys per second, above 1 for CPU per deploy. What it measures is
everything the DC adds around the driver: the broker, the link's decoding and
acknowledgement, the bus, the journal (a transaction per batch, fsynced), four
notifications per deploy each awaiting the broker's confirm, the per-VM and per-host
limits and the driver pool.

One process holds the DC, central's side and, by default, the in-process broker, as the
all-in-one runs them: their CPU is counted with the DC's. The reference row shows how
much of it is the Virtualization Manager's own: the VirtualFactory alone, handed the
same tasks on a bus as the link hands them (at most `prefetch` at once), its
notifications confirmed at once, with no broker, link or central.

`--rabbitmq URL` runs both links over RabbitMQ instead (each over its own connection,
with publisher confirms): the broker's CPU is then out of the figure, the AMQP client's
of both sides in. Point it at a vhost nothing else uses: central's side consumes the
shared notifications queue, acknowledging whatever it finds there. The DC's request
queues are named by a uuid made for the run and are left on the broker, empty.

Each round runs the baseline, the reference and a fresh datacenter (new journal, new
hosts) one after the other; the figures printed are the medians over the rounds, each
ratio the median of the rounds' ratios (a round's figures are measured moments apart, on
a shared and noisy machine). Every VM must be ON on its simulated host and every job
must have had exactly one DONE (and no other final state), in every round, or the exit
status is 1.

The event loop is uvloop, as abiquo-dc runs (abiquo_runtime.process.run_service), and
what exists before the timed span is frozen out of the collector's sight, as serve does
once the program started; `--loop asyncio` for comparison.

    .venv/bin/python bench/vfactory.py [--vms N] [--hosts N] [--repeat N]
        [--rabbitmq URL] [--loop uvloop|asyncio] [--timeout S]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import resource
import statistics
import sys
import tempfile
import time
import uuid as uuidlib
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from abiquo_central.link import CentralLink
from abiquo_dc.app import Datacenter, build_datacenter
from abiquo_dc.bus import Bus
from abiquo_dc.hypervisors.base import PowerState
from abiquo_dc.hypervisors.simulator import SimulatedCloud, SimulatorDriver
from abiquo_dc.protocol.definitions import (
    DiskFormat,
    HypervisorConnection,
    HypervisorType,
    Nic,
    RepositoryDisk,
    VirtualMachineDefinition,
)
from abiquo_dc.protocol.jobs import (
    FINAL_STATES,
    Job,
    JobNotification,
    JobState,
    JobType,
    VirtualFactoryTask,
)
from abiquo_dc.protocol.messages import Message
from abiquo_dc.settings import (
    DatacenterSettings,
    DCSettings,
    SimulatorSettings,
    VirtualFactorySettings,
)
from abiquo_dc.vfactory.service import VirtualFactory
from abiquo_runtime.logs import configure_logging
from abiquo_runtime.messaging.transport import Transport
from abiquo_runtime.settings import HttpSettings, LogSettings
from abiquo_runtime.shutdown import run_stages

DATASTORE = "/var/lib/virt"
GIB = 1024**3
# After the last DONE and the DC's shutdown: how long no notification may arrive before
# the count of each job's notifications is taken as final.
QUIET = 0.3


@dataclass(frozen=True)
class Deploy:
    address: str
    definition: VirtualMachineDefinition


def host_address(i: int) -> str:
    return f"10.1.{i // 250}.{i % 250 + 1}"


def plan(vms: int, hosts: int) -> list[Deploy]:
    """VM i on host i mod hosts, each with one repository disk and one NIC."""
    deploys = []
    for i in range(vms):
        uuid = str(uuidlib.uuid4())
        mac = f"52:54:00:{i >> 16 & 0xFF:02x}:{i >> 8 & 0xFF:02x}:{i & 0xFF:02x}"
        definition = VirtualMachineDefinition(
            uuid=uuid,
            name=f"bench-{i}",
            cpu=1,
            ram_mb=512,
            disks=[
                RepositoryDisk(
                    repository_path="1/templates/debian-12/disk.qcow2",
                    datastore=DATASTORE,
                    format=DiskFormat.QCOW2_SPARSE,
                    size_bytes=2 * GIB,
                )
            ],
            nics=[
                Nic(
                    mac=mac,
                    ip=f"10.200.{i // 250}.{i % 250 + 1}",
                    vlan_tag=100,
                    network_name="bench",
                    bridge="abiquo_100",
                )
            ],
        )
        deploys.append(Deploy(host_address(i % hosts), definition))
    return deploys


def deploy_task(deploy: Deploy) -> VirtualFactoryTask:
    connection = HypervisorConnection(type=HypervisorType.KVM, address=deploy.address)
    jobs = [
        Job(
            id=f"{kind.value.lower()}-{uuidlib.uuid4().hex}",
            type=kind,
            connection=connection,
            definition=deploy.definition,
        )
        for kind in (JobType.CONFIGURE, JobType.POWER_ON)
    ]
    return VirtualFactoryTask(task_id=f"deploy-{uuidlib.uuid4().hex}", jobs=jobs)


def simulated_hosts(hosts: int) -> SimulatedCloud:
    cloud = SimulatedCloud()
    add_hosts(cloud, hosts)
    return cloud


def add_hosts(cloud: SimulatedCloud, hosts: int) -> None:
    for i in range(hosts):
        cloud.add_host(host_address(i))


def not_on(cloud: SimulatedCloud, deploys: list[Deploy]) -> list[str]:
    """The VMs of `deploys` missing from their host or not ON there."""
    wrong = []
    for deploy in deploys:
        vm = cloud.hosts[deploy.address].vms.get(deploy.definition.uuid)
        if vm is None or vm.power_state is not PowerState.ON:
            state = "absent" if vm is None else vm.power_state.value
            wrong.append(f"{deploy.definition.uuid} on {deploy.address}: {state}")
    return wrong


# -- measuring -------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    wall: float
    cpu: float
    user: float
    system: float

    @staticmethod
    def now() -> Snapshot:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return Snapshot(time.perf_counter(), time.process_time(), usage.ru_utime, usage.ru_stime)


@dataclass(frozen=True)
class Figures:
    deploys: int
    wall: float
    cpu: float
    user: float
    system: float
    # The journal's transactions (vfactory only).
    commits: int = 0

    @staticmethod
    def between(start: Snapshot, end: Snapshot, deploys: int, commits: int = 0) -> Figures:
        return Figures(
            deploys=deploys,
            wall=end.wall - start.wall,
            cpu=end.cpu - start.cpu,
            user=end.user - start.user,
            system=end.system - start.system,
            commits=commits,
        )

    @property
    def rate(self) -> float:
        return self.deploys / self.wall

    @property
    def cpu_ms(self) -> float:
        return 1000 * self.cpu / self.deploys


def frozen_start() -> Snapshot:
    """Everything made so far out of the collector's sight (as serve does after start-up),
    then the start of the measure."""
    gc.collect()
    gc.freeze()
    return Snapshot.now()


# -- the baseline: the driver directly -------------------------------------------------


async def direct(
    deploys: list[Deploy], hosts: int, limits: VirtualFactorySettings
) -> tuple[Figures, list[str]]:
    """configure then power_on for each VM, on one connected driver per host, with the
    DC's bounds: max_jobs operations at once in all, max_jobs_per_host on one host."""
    cloud = simulated_hosts(hosts)
    drivers: dict[str, SimulatorDriver] = {}
    for i in range(hosts):
        address = host_address(i)
        connection = HypervisorConnection(type=HypervisorType.KVM, address=address)
        driver = SimulatorDriver(connection, cloud=cloud, timeout=limits.driver_timeout)
        await driver.connect()
        drivers[address] = driver
    total = asyncio.Semaphore(limits.max_jobs)
    per_host = {a: asyncio.Semaphore(limits.max_jobs_per_host) for a in drivers}

    async def bounded(address: str, call: Callable[[], Awaitable[None]]) -> None:
        async with per_host[address], total:
            await call()

    async def one(deploy: Deploy) -> None:
        driver = drivers[deploy.address]
        d = deploy.definition
        await bounded(deploy.address, lambda: driver.configure(d))
        await bounded(deploy.address, lambda: driver.power_on(d.uuid))

    start = frozen_start()
    try:
        await asyncio.gather(*(one(d) for d in deploys))
        end = Snapshot.now()
    finally:
        gc.unfreeze()
    for driver in drivers.values():
        await driver.close()
    await cloud.close()
    return Figures.between(start, end, len(deploys)), not_on(cloud, deploys)


# -- through the datacenter ------------------------------------------------------------


@dataclass
class Notifications:
    """What central's side hears about this DC's jobs; `settled` once each job has a
    final state."""

    dc_uuid: str
    jobs: set[str]
    by_job: dict[str, Counter[JobState]] = field(default_factory=dict)
    others: int = 0
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    end: Snapshot | None = None
    last_arrival: float = 0.0
    _open: set[str] = field(default_factory=set, init=False)

    def __post_init__(self) -> None:
        self._open = set(self.jobs)

    async def on_message(self, message: Message) -> None:
        if not isinstance(message, JobNotification) or message.dc_uuid != self.dc_uuid:
            return
        self.last_arrival = time.perf_counter()
        if message.job_id not in self.jobs:
            self.others += 1
            return
        self.by_job.setdefault(message.job_id, Counter())[message.state] += 1
        if message.state in FINAL_STATES and message.job_id in self._open:
            self._open.discard(message.job_id)
            if not self._open:
                self.end = Snapshot.now()
                self.settled.set()

    async def wait(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self.settled.wait(), timeout)
        except TimeoutError:
            raise SystemExit(
                f"not every job finished within {timeout} s: "
                f"{len(self.jobs) - len(self._open)} of {len(self.jobs)} did"
            ) from None

    def problems(self) -> list[str]:
        found = []
        for job_id in sorted(self.jobs):
            states = self.by_job.get(job_id, Counter())
            if states[JobState.DONE] != 1 or set(states) - {JobState.START, JobState.DONE}:
                said = ", ".join(f"{n} {state.value}" for state, n in states.items())
                found.append(f"job {job_id}: {said or 'no notification'}")
        if self.others:
            found.append(f"{self.others} notifications about jobs not sent")
        return found

    def count(self) -> int:
        return sum(sum(c.values()) for c in self.by_job.values())


def dc_settings(state_dir: Path, dc_uuid: str) -> DCSettings:
    return DCSettings(
        datacenter=DatacenterSettings(uuid=dc_uuid, name="bench", state_dir=str(state_dir)),
        http=HttpSettings(host="127.0.0.1", port=0),
        simulator=SimulatorSettings(enabled=True),
    )


async def through_dc(
    deploys: list[Deploy],
    hosts: int,
    dc_uuid: str,
    transports: Callable[[], tuple[Transport, Transport]],
    timeout: float,
) -> tuple[Figures, list[str]]:
    """The deploys sent by central's side to a fresh DC; its figures and what went wrong."""
    tasks = [deploy_task(d) for d in deploys]
    jobs = {job.id for task in tasks for job in task.jobs}
    heard = Notifications(dc_uuid, jobs)
    dc_transport, central_transport = transports()
    central = CentralLink(transport=central_transport, on_message=heard.on_message, prefetch=64)
    await central.start()
    await central.accept()
    with tempfile.TemporaryDirectory(prefix="abiquo-bench-vfactory-") as state_dir:
        dc = build_datacenter(
            dc_settings(Path(state_dir), dc_uuid), transport=dc_transport, dc_uuid=dc_uuid
        )
        assert dc.simulator is not None
        add_hosts(dc.simulator, hosts)
        factory = next(s for s in dc.subsystems if isinstance(s, VirtualFactory))
        try:
            await dc.start()
            for subsystem in dc.subsystems:
                await subsystem.wait_running(30)
            figures = await deploy_all(dc, central, factory, tasks, heard, timeout)
        finally:
            await run_stages(dc.shutdown_stages())
        # Whatever the DC had confirmed reaches central before the count is taken.
        while True:
            left = QUIET - (time.perf_counter() - heard.last_arrival)
            if left <= 0 and not central.in_flight():
                break
            await asyncio.sleep(max(left, QUIET / 4))
        await central.close()
        problems = heard.problems()
        problems += not_on(dc.simulator, deploys)
    if heard.count() != 4 * len(deploys):
        problems.append(f"{heard.count()} notifications for {len(deploys)} deploys, not 4 each")
    return figures, problems


async def deploy_all(
    dc: Datacenter,
    central: CentralLink,
    factory: VirtualFactory,
    tasks: list[VirtualFactoryTask],
    heard: Notifications,
    timeout: float,
) -> Figures:
    # As central's request handlers would: many sends at once, each until the broker
    # confirmed it.
    window = asyncio.Semaphore(64)

    async def send(task: VirtualFactoryTask) -> None:
        async with window:
            await central.send(dc.uuid, "virtualfactory", task)

    start = frozen_start()
    try:
        sending = asyncio.gather(*(send(t) for t in tasks))
        await heard.wait(timeout)
        await sending
    finally:
        gc.unfreeze()
    assert heard.end is not None and factory.journal is not None
    return Figures.between(start, heard.end, len(tasks), commits=factory.journal.commits)


async def alone(
    deploys: list[Deploy], hosts: int, settings: VirtualFactorySettings, timeout: float
) -> tuple[Figures, list[str]]:
    """For reference: the VirtualFactory by itself, handed the tasks on a bus as the link
    hands them, its notifications confirmed at once: no broker, no link, no central."""
    tasks = [deploy_task(d) for d in deploys]
    heard = Notifications("bench", {job.id for task in tasks for job in task.jobs})
    cloud = simulated_hosts(hosts)
    bus = Bus(name="bench.bus")

    # As the link takes them: at most `prefetch` tasks in handlers at once.
    prefetch = asyncio.Semaphore(settings.prefetch)

    async def handle(task: VirtualFactoryTask) -> None:
        async with prefetch:
            await bus.request(task, timeout=None)

    def opener(connection: HypervisorConnection) -> SimulatorDriver:
        return SimulatorDriver(connection, cloud=cloud, timeout=settings.driver_timeout)

    with tempfile.TemporaryDirectory(prefix="abiquo-bench-vfactory-") as state_dir:
        factory = VirtualFactory(
            bus=bus,
            dc_uuid="bench",
            state_dir=Path(state_dir),
            publish=heard.on_message,
            opener=opener,
            settings=settings,
        )
        await factory.start()
        try:
            await factory.wait_running(30)
            start = frozen_start()
            try:
                requests = asyncio.gather(*(handle(t) for t in tasks))
                await heard.wait(timeout)
                await requests
            finally:
                gc.unfreeze()
            assert heard.end is not None and factory.journal is not None
            figures = Figures.between(start, heard.end, len(tasks), factory.journal.commits)
        finally:
            await factory.stop()
            await bus.close()
            await cloud.close()
    problems = heard.problems() + not_on(cloud, deploys)
    if heard.count() != 4 * len(deploys):
        problems.append(f"{heard.count()} notifications for {len(deploys)} deploys, not 4 each")
    return figures, problems


# -- the run ---------------------------------------------------------------------------


def transports_for(rabbitmq: str | None, round_: int) -> Callable[[], tuple[Transport, Transport]]:
    def memory() -> tuple[Transport, Transport]:
        from abiquo_runtime.messaging.memory import MemoryBroker

        broker = MemoryBroker()
        return broker.connection("dc"), broker.connection("central")

    def amqp() -> tuple[Transport, Transport]:
        from abiquo_runtime.messaging.amqp import AmqpTransport

        assert rabbitmq is not None
        return (
            AmqpTransport(rabbitmq, connection_name=f"bench-vfactory dc {round_}"),
            AmqpTransport(rabbitmq, connection_name=f"bench-vfactory central {round_}"),
        )

    return memory if rabbitmq is None else amqp


@dataclass
class Row:
    name: str
    figures: list[Figures] = field(default_factory=list)

    def rate(self) -> float:
        return statistics.median(f.rate for f in self.figures)

    def cpu_ms(self) -> float:
        return statistics.median(f.cpu_ms for f in self.figures)

    def rate_ratio(self, baseline: Row) -> float:
        pairs = zip(self.figures, baseline.figures, strict=True)
        return statistics.median(f.rate / b.rate for f, b in pairs)

    def cpu_ratio(self, baseline: Row) -> float:
        pairs = zip(self.figures, baseline.figures, strict=True)
        return statistics.median(f.cpu / b.cpu for f, b in pairs)


def describe(name: str, f: Figures) -> str:
    return (
        f"{name} {f.rate:,.0f} deploys/s {f.cpu_ms:.3f} ms CPU/deploy "
        f"(user {f.user:.2f} s, system {f.system:.2f} s"
        + (f", {f.commits} journal commits)" if f.commits else ")")
    )


async def main(args: argparse.Namespace) -> int:
    configure_logging(LogSettings(level="warning"), program="bench-vfactory")
    dc_uuid = str(uuidlib.uuid4())
    limits = DCSettings().vfactory  # the bounds the DC runs with
    broker = "over RabbitMQ" if args.rabbitmq else "in-process broker"
    baseline = Row("simulator driver directly (baseline)")
    reference = Row("VirtualFactory alone, on a bus (reference)")
    whole = Row(f"whole DC and central, {broker}")
    problems: list[str] = []
    for round_ in range(1, args.repeat + 1):
        deploys = plan(args.vms, args.hosts)
        figures, wrong = await direct(deploys, args.hosts, limits)
        baseline.figures.append(figures)
        problems += [f"round {round_}, directly: {w}" for w in wrong]
        figures, wrong = await alone(deploys, args.hosts, limits, args.timeout)
        reference.figures.append(figures)
        problems += [f"round {round_}, vfactory alone: {w}" for w in wrong]
        figures, wrong = await through_dc(
            deploys, args.hosts, dc_uuid, transports_for(args.rabbitmq, round_), args.timeout
        )
        whole.figures.append(figures)
        problems += [f"round {round_}, the DC: {w}" for w in wrong]
        print(f"round {round_}:", flush=True)
        for name, row in (
            ("  directly", baseline),
            ("  alone   ", reference),
            ("  the DC  ", whole),
        ):
            print(describe(name, row.figures[-1]), flush=True)

    print(
        f"\n{args.vms} VMs on {args.hosts} simulated hosts, CONFIGURE + POWER_ON each; "
        f"max_jobs {limits.max_jobs}, max_jobs_per_host {limits.max_jobs_per_host}; "
        f"{args.loop}; medians of {args.repeat} round(s)\n"
        "ratio: the row's figure ÷ the baseline's in the same round (median of the rounds)"
    )
    print(f"{'':<50} {'deploys/s':>10} {'ratio':>8}   {'CPU ms/deploy':>13} {'ratio':>7}")
    for row in (baseline, reference, whole):
        print(
            f"{row.name:<50} {row.rate():>10,.0f} {row.rate_ratio(baseline):>8.4f}   "
            f"{row.cpu_ms():>13.4f} {row.cpu_ratio(baseline):>7.1f}"
        )
    if problems:
        print(f"\nFAILED: {len(problems)} problems", file=sys.stderr)
        for problem in problems[:20]:
            print(f"  {problem}", file=sys.stderr)
        return 1
    print("\nchecked: every VM ON on its host, every job exactly one DONE, in every round")
    return 0


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--vms", type=int, default=1000)
    parser.add_argument("--hosts", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3, help="rounds; medians are printed")
    parser.add_argument("--rabbitmq", metavar="URL", help="both links over this RabbitMQ")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds a round may take")
    args = parser.parse_args()
    if args.vms < 1 or args.hosts < 1 or args.repeat < 1:
        parser.error("--vms, --hosts and --repeat must be at least 1")
    return args


if __name__ == "__main__":
    options = arguments()
    run = uvloop.run if options.loop == "uvloop" else asyncio.run
    raise SystemExit(run(main(options)))
