"""VM deploys through the whole stack: the API, central, RabbitMQ, a DC and its simulator.

2,000 VMs are deployed across 100 simulated hosts as a client of the API would:
POST .../virtualmachines/{vm}/action/deploy, then GET the VM until it reads ON. The path
each deploy takes: central's API (a task and its outbox row in MariaDB) → the outbox
relay → RabbitMQ → the DC (abiquo_dc.app.build_datacenter with the simulator enabled:
every host is abiquo_dc/hypervisors/simulator.py's) → its VirtualFactory and the
simulator driver → the job notifications (and the VSM's events, over Redis) back over
RabbitMQ → central, which finishes the task and puts the VM ON.

Central and the DC each run in a process of their own (started by this script, uvloop,
as their programs run them: abiquo_runtime.process.serve), the load generator in a third;
the machine has 2 cores, which the three share with MariaDB, RabbitMQ and Redis. Their
CPU is read from /proc/<pid>/stat (user + system, every thread) just before the first
POST and once the last VM read ON.

Printed: sustained deploys per second (the deploys ÷ the span from the first POST to the
last VM read ON), the p50 and p99 of each deploy's time from its POST to the first GET
that reads it ON (and, of that, the p50 and p99 of the POST's own answer, the 202), and
the CPU seconds per deploy of central and of the DC. Central's includes the clients'
polling GETs: once every VM is ON, as many GETs are made again and their CPU measured,
and central's figure is also printed without them. As the baseline, in the same run:
the same number of deploys (configure, then power on) made directly on SimulatorDriver
instances with the DC's vfactory bounds, as bench/vfactory.py makes them (its `direct`);
each figure is also printed as a ratio to it.

`--clients` clients (100 by default) each take the next VM, POST its deploy and GET it
every `--poll` seconds (0.25) until ON: the latency's resolution is that interval, and
central's CPU includes those GETs (their count is printed). Every request uses a session
token (GET /api/login once): with Basic every request would verify an argon2 hash.

Set-up, before anything is timed, over the API: the datacenter with its remote services
at the DC, a rack, the simulated hosts (added through the DC's simulator knobs, HTTP)
discovered and added as machines with their datastore enabled, an enterprise with
limits in the datacenter (0: unlimited), one VDC for every 1,000 VMs (its default
network a /22: 1,022 addresses), appliances of 100 VMs, the VMs. Directly in the
database: the template (a row of virtual_machine_template in state DOWNLOAD, which is
all the simulator needs; an upload to the Appliance Manager is not what is measured).

The services: a database of its own on the MariaDB server (created, dropped at the end),
a vhost of its own on RabbitMQ (rabbitmqctl, guest's permissions; deleted at the end),
a key prefix of its own on Redis (its keys deleted at the end).

    .venv/bin/python bench/deploy.py [--vms 2000] [--hosts 100] [--clients 100]
        [--poll 0.25] [--db-url mysql+aiomysql://root@127.0.0.1:3306]
        [--rabbitmq-url amqp://guest:guest@127.0.0.1:5672/] [--redis-url redis://127.0.0.1:6379/0]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import math
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
import uvloop
from sqlalchemy import insert

from bench.api import Served, create_database, drop_database
from bench.vfactory import direct, plan

T = TypeVar("T")
ADMIN_PASSWORD = "bench-admin-password"
GIB = 1024**3
TEMPLATE_DISK = GIB
VMS_PER_VDC = 1000  # a /22 holds 1,022 addresses
VMS_PER_VAPP = 100
SERVICES = {
    "VIRTUAL_FACTORY": "virtualfactory",
    "VIRTUAL_SYSTEM_MONITOR": "vsm",
    "NODE_COLLECTOR": "nodecollector",
    "STORAGE_SYSTEM_MONITOR": "ssm",
    "APPLIANCE_MANAGER": "am",
    "BPM_SERVICE": "bpm-async",
}
# While a deploy runs the VM reads LOCKED; NOT_ALLOCATED again means it failed.
IN_PROGRESS = {"LOCKED", "ALLOCATED", "CONFIGURED"}


# ---------------------------------------------------------------- the served side


def serve_central(db_url: str, rabbitmq_url: str, key_file: str) -> int:
    from abiquo_central.app import Central
    from abiquo_central.settings import (
        CentralSettings,
        DatabaseSettings,
        SecretsSettings,
    )
    from abiquo_runtime.logs import configure_logging
    from abiquo_runtime.messaging.amqp import AmqpTransport
    from abiquo_runtime.process import run_service, serve
    from abiquo_runtime.settings import HttpSettings, LogSettings, RabbitSettings

    configure_logging(LogSettings(level="warning"), program="bench-deploy-central")
    settings = CentralSettings(
        http=HttpSettings(host="127.0.0.1", port=0),
        # The clients' GETs and POSTs, the notifications and the outbox at once.
        database=DatabaseSettings(url=db_url, pool_size=20),
        rabbitmq=RabbitSettings(url=rabbitmq_url, prefetch=64),
        secrets=SecretsSettings(key_file=key_file),
    )

    async def build() -> int:
        central = Central(
            settings, transport=AmqpTransport(rabbitmq_url, connection_name="bench-deploy central")
        )

        async def ready() -> None:
            print(central.url, flush=True)

        return await serve(central, on_ready=ready)

    return run_service(build)


def serve_dc(rabbitmq_url: str, redis_url: str, redis_prefix: str, state_dir: str) -> int:
    from abiquo_dc.app import build_datacenter
    from abiquo_dc.settings import (
        DatacenterSettings,
        DCSettings,
        RedisSettings,
        RepositorySettings,
        SimulatorSettings,
    )
    from abiquo_runtime.logs import configure_logging
    from abiquo_runtime.messaging.amqp import AmqpTransport
    from abiquo_runtime.process import run_service, serve
    from abiquo_runtime.settings import HttpSettings, LogSettings, RabbitSettings

    configure_logging(LogSettings(level="warning"), program="bench-deploy-dc")
    repository = Path(state_dir) / "repository"
    repository.mkdir(exist_ok=True)
    (repository / ".abiquo_repository").touch()
    settings = DCSettings(
        datacenter=DatacenterSettings(
            name="bench", state_dir=str(Path(state_dir) / "dc"), heartbeat_interval=1.0
        ),
        http=HttpSettings(host="127.0.0.1", port=0),
        rabbitmq=RabbitSettings(url=rabbitmq_url),
        redis=RedisSettings(url=redis_url, prefix=redis_prefix),
        repository=RepositorySettings(path=str(repository)),
        simulator=SimulatorSettings(enabled=True, http_knobs=True),
        # vfactory: its defaults (prefetch 256, max_jobs 64, 4 per host), which the
        # baseline uses too.
    )

    async def build() -> int:
        dc = build_datacenter(
            settings, transport=AmqpTransport(rabbitmq_url, connection_name="bench-deploy dc")
        )

        async def ready() -> None:
            print(dc.server.url, flush=True)

        return await serve(dc, on_ready=ready)

    return run_service(build)


# ---------------------------------------------------------------- the services


def create_vhost(rabbitmq_url: str) -> tuple[str, str]:
    """A vhost of its own on that server; its name and the URL that names it."""
    ctl = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    vhost = f"abiquo-bench-deploy-{uuid.uuid4().hex[:8]}"
    subprocess.run([ctl, "-q", "add_vhost", vhost], check=True, capture_output=True)
    subprocess.run(
        [ctl, "-q", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
        check=True,
        capture_output=True,
    )
    parts = urlsplit(rabbitmq_url)
    return vhost, urlunsplit(parts._replace(path="/" + quote(vhost, safe="")))


def delete_vhost(vhost: str) -> None:
    ctl = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    subprocess.run([ctl, "-q", "delete_vhost", vhost], check=False, capture_output=True)


def delete_redis_keys(redis_url: str, prefix: str) -> int:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
        return len(keys)
    finally:
        client.close()


# ---------------------------------------------------------------- the API as a client


def vendor(name: str) -> str:
    return f"application/vnd.abiquo.{name}+json"


def link(entity: dict[str, Any], rel: str) -> str:
    return str(next(lk["href"] for lk in entity["links"] if lk["rel"] == rel))


class Api:
    def __init__(self, http: aiohttp.ClientSession, root: str) -> None:
        self.http, self.root = http, root
        self.auth = aiohttp.encode_basic_auth("admin", ADMIN_PASSWORD)
        self.requests = 0

    async def login(self) -> None:
        async with self.http.get(
            f"{self.root}/login", headers={"Authorization": self.auth}
        ) as response:
            assert response.status == 200, await response.text()
            self.auth = f"Token {response.headers['X-Abiquo-Token']}"

    async def call(
        self, method: str, path: str, *, media: str, body: Any = None, **params: str
    ) -> tuple[int, Any]:
        url = path if path.startswith("http") else f"{self.root}{path}"
        headers = {"Authorization": self.auth, "Accept": vendor(media)}
        if body is not None:
            headers["Content-Type"] = vendor(media)
        self.requests += 1
        async with self.http.request(
            method, url, json=body, headers=headers, params=params or None
        ) as response:
            text = await response.text()
            try:
                return response.status, await response.json(content_type=None)
            except ValueError:
                return response.status, text

    async def create(self, path: str, media: str, body: Any) -> dict[str, Any]:
        status, created = await self.call("POST", path, media=media, body=body)
        if status != 201:
            raise SystemExit(f"POST {path} ({media}): {status} {created}")
        return dict(created)


async def wait_for(check: Callable[[], Awaitable[T | None]], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await check()
        if found:
            return found
        await asyncio.sleep(0.2)
    raise SystemExit(f"{what}: not within {timeout:.0f} s")


async def bounded(n: int, jobs: list[Callable[[], Awaitable[T]]]) -> list[T]:
    window = asyncio.Semaphore(n)

    async def one(job: Callable[[], Awaitable[T]]) -> T:
        async with window:
            return await job()

    return list(await asyncio.gather(*(one(j) for j in jobs)))


def host_address(i: int) -> str:
    return f"10.77.{i // 250}.{i % 250 + 1}"


@dataclass
class Cloud:
    datacenter_id: int
    vm_hrefs: list[str]


async def set_up(
    api: Api, http: aiohttp.ClientSession, dc_url: str, db_url: str, args: argparse.Namespace
) -> Cloud:
    # The simulated hosts, through the DC's knobs: room for the VMs each will hold.
    per_host = math.ceil(args.vms / args.hosts)
    cores = max(16, per_host)
    ram = max(64 * GIB, 2 * per_host * 256 * 1024**2)

    async def add_host(i: int) -> None:
        async with http.post(
            f"{dc_url}/simulator/hosts",
            json={
                "address": host_address(i),
                "name": f"sim-{i:04d}",
                "hypervisorType": "KVM",
                "cpuCores": cores,
                "cpuSockets": 2,
                "ramBytes": ram,
            },
        ) as response:
            assert response.status == 201, await response.text()

    await bounded(10, [partial(add_host, i) for i in range(args.hosts)])

    datacenter = await api.create(
        "/admin/datacenters",
        "datacenter",
        {
            "name": "Bench",
            "location": "here",
            "remoteServices": {
                "collection": [
                    {"type": kind, "uri": f"{dc_url}/{path}"} for kind, path in SERVICES.items()
                ]
            },
        },
    )
    here = link(datacenter, "edit")

    async def services_up() -> bool:
        _, found = await api.call("GET", here, media="datacenter")
        statuses = [rs["status"] for rs in found["remoteServices"]["collection"]]
        return bool(found["available"]) and statuses == [1] * len(SERVICES)

    await wait_for(services_up, 60, "the datacenter's remote services up")
    rack = await api.create(
        f"{here}/racks", "rack", {"name": "rack-1", "vlanIdMin": 100, "vlanIdMax": 4000}
    )

    async def add_machine(i: int) -> None:
        status, found = await api.call(
            "GET",
            f"{here}/action/discoversingle",
            media="machine",
            ip=host_address(i),
            hypervisor="KVM",
            port="8889",
        )
        assert status == 200, found
        found["virtualSwitch"] = found["virtualSwitch"].split(",")[0]
        for ds in found["datastores"]["collection"]:
            ds["enabled"] = True
        found["password"] = ""
        await api.create(link(rack, "machines"), "machine", found)

    await bounded(10, [partial(add_machine, i) for i in range(args.hosts)])

    enterprise = await api.create("/admin/enterprises", "enterprise", {"name": "Bench"})
    await api.create(
        f"{link(enterprise, 'edit')}/limits",
        "limit",
        {"links": [{"rel": "location", "href": here}]},
    )
    template_id = await insert_template(db_url, enterprise["id"], datacenter["id"])
    template = (
        f"{api.root}/admin/enterprises/{enterprise['id']}/datacenterrepositories/"
        f"{datacenter['id']}/virtualmachinetemplates/{template_id}"
    )

    vapps: list[str] = []
    for v in range(math.ceil(args.vms / VMS_PER_VDC)):
        vdc = await api.create(
            "/cloud/virtualdatacenters",
            "virtualdatacenter",
            {
                "name": f"vdc-{v}",
                "hypervisorType": "KVM",
                "network": {
                    "name": f"net-{v}",
                    "address": f"10.{100 + v}.0.0",
                    "mask": 22,
                    "gateway": f"10.{100 + v}.0.1",
                },
                "links": [
                    {"rel": "location", "href": f"{api.root}/cloud/locations/{datacenter['id']}"},
                    {"rel": "enterprise", "href": link(enterprise, "edit")},
                ],
            },
        )
        in_vdc = min(VMS_PER_VDC, args.vms - v * VMS_PER_VDC)
        for a in range(math.ceil(in_vdc / VMS_PER_VAPP)):
            vapp = await api.create(
                link(vdc, "virtualappliances"), "virtualappliance", {"name": f"vapp-{v}-{a}"}
            )
            vapps += [link(vapp, "virtualmachines")] * min(VMS_PER_VAPP, in_vdc - a * VMS_PER_VAPP)

    async def add_vm(n: int, where: str) -> str:
        vm = await api.create(
            where,
            "virtualmachine",
            {"label": f"vm-{n}", "links": [{"rel": "virtualmachinetemplate", "href": template}]},
        )
        return link(vm, "edit")

    hrefs = await bounded(
        10,
        [partial(add_vm, n, w) for n, w in enumerate(vapps)],
    )
    return Cloud(datacenter_id=int(datacenter["id"]), vm_hrefs=hrefs)


async def insert_template(db_url: str, enterprise_id: int, datacenter_id: int) -> int:
    """A template already in the repository, as the AM's report would leave it."""
    from abiquo_central.db import tables
    from abiquo_central.db.engine import create_engine
    from abiquo_central.db.rows import inserted_id

    engine = create_engine(db_url, pool_size=1, echo=False)
    ovf = "http://bench/deploy/tiny.ovf"
    try:
        async with engine.begin() as conn:
            result = await conn.execute(
                insert(tables.virtual_machine_template).values(
                    enterprise_id=enterprise_id,
                    datacenter_id=datacenter_id,
                    ovf_id=ovf,
                    ovf_key=hashlib.sha256(ovf.encode()).hexdigest(),
                    name="tiny",
                    description="",
                    state="DOWNLOAD",
                    disk_path="1/bench/tiny.qcow2",
                    disk_format="QCOW2_SPARSE",
                    disk_file_size=16 * 1024**2,
                    hd_required=TEMPLATE_DISK,
                    cpu_required=1,
                    ram_required=256,
                    created_at=datetime.now(UTC),
                )
            )
            return inserted_id(result)
    finally:
        await engine.dispose()


# ---------------------------------------------------------------- the load


@dataclass
class Outcome:
    latencies: list[float] = field(default_factory=list)
    # From the POST to its 202: how much of the latency is the API's answer.
    accepted: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    first_post: float = math.inf
    last_on: float = 0.0
    gets: int = 0
    # Central's CPU seconds for as many GETs again, once every VM is ON.
    cpu_of_gets: float = 0.0


async def deploy_all(
    api: Api, hrefs: list[str], clients: int, poll: float, timeout: float
) -> Outcome:
    outcome = Outcome()
    queue = list(reversed(hrefs))

    async def one(href: str) -> None:
        started = time.perf_counter()
        outcome.first_post = min(outcome.first_post, started)
        status, accepted = await api.call("POST", f"{href}/action/deploy", media="acceptedrequest")
        if status != 202:
            outcome.failures.append(f"{href}: deploy answered {status} {accepted}")
            return
        outcome.accepted.append(time.perf_counter() - started)
        while True:
            await asyncio.sleep(poll)
            outcome.gets += 1
            status, vm = await api.call("GET", href, media="virtualmachine")
            now = time.perf_counter()
            if status == 200 and vm["state"] == "ON":
                outcome.latencies.append(now - started)
                outcome.last_on = max(outcome.last_on, now)
                return
            if status != 200 or vm["state"] not in IN_PROGRESS:
                _, task = await api.call("GET", link(accepted, "status"), media="task")
                said = vm["state"] if status == 200 else f"{status} {vm}"
                outcome.failures.append(f"{href}: {said}; task {task}")
                return
            if now - started > timeout:
                outcome.failures.append(f"{href}: still {vm['state']} after {timeout:.0f} s")
                return

    async def client() -> None:
        while queue:
            await one(queue.pop())

    await asyncio.gather(*(client() for _ in range(clients)))
    return outcome


async def get_again(api: Api, hrefs: list[str], count: int, clients: int) -> None:
    """`count` GETs of the VMs (which are ON by now), `clients` at a time: what the
    clients' polling cost central, measured apart from the deploys."""
    left = count

    async def client(offset: int) -> None:
        nonlocal left
        i = offset
        while left > 0:
            left -= 1
            await api.call("GET", hrefs[i % len(hrefs)], media="virtualmachine")
            i += clients

    await asyncio.gather(*(client(n) for n in range(clients)))


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


async def simulated_vms_on(http: aiohttp.ClientSession, dc_url: str) -> int:
    async with http.get(f"{dc_url}/simulator/hosts") as response:
        return sum(h["vms"] for h in await response.json())


async def measure(
    args: argparse.Namespace, db_url: str, central: Served, dc: Served
) -> tuple[Outcome, float, float, float]:
    """The set-up, then the deploys; the outcome, their wall time, and the CPU seconds of
    central and of the DC over them."""
    connector = aiohttp.TCPConnector(limit=args.clients + 10)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        api = Api(http, f"{central.url}/api")
        await api.login()
        t0 = time.perf_counter()
        cloud = await set_up(api, http, dc.url, db_url, args)
        print(
            f"set up {args.hosts} machines and {len(cloud.vm_hrefs):,} VMs over the API in "
            f"{time.perf_counter() - t0:.1f} s ({api.requests:,} requests)",
            flush=True,
        )
        await asyncio.sleep(2)  # the set-up's tail (events, outbox) settles
        cpu_central, cpu_dc = central.cpu(), dc.cpu()
        outcome = await deploy_all(api, cloud.vm_hrefs, args.clients, args.poll, args.timeout)
        cpu_central, cpu_dc = central.cpu() - cpu_central, dc.cpu() - cpu_dc
        wall = outcome.last_on - outcome.first_post
        on = await simulated_vms_on(http, dc.url)
        if on != len(cloud.vm_hrefs):
            outcome.failures.append(f"{on} VMs on the simulated hosts, not {len(cloud.vm_hrefs)}")
        await asyncio.sleep(2)
        polls = central.cpu()
        await get_again(api, cloud.vm_hrefs, outcome.gets, args.clients)
        outcome.cpu_of_gets = central.cpu() - polls
    return outcome, wall, cpu_central, cpu_dc


async def baseline(vms: int, hosts: int) -> tuple[float, float]:
    """Deploys per second and CPU seconds per deploy on the simulator driver directly."""
    from abiquo_dc.settings import DCSettings

    figures, wrong = await direct(plan(vms, hosts), hosts, DCSettings().vfactory)
    if wrong:
        raise SystemExit(f"the baseline went wrong: {wrong[:5]}")
    return figures.rate, figures.cpu / vms


def run(args: argparse.Namespace) -> int:
    from abiquo_central.db.migrate import upgrade
    from abiquo_central.tenants.seed import ensure_admin

    db_url = create_database(args.db_url)
    vhost, rabbitmq_url = create_vhost(args.rabbitmq_url)
    redis_prefix = f"abiquo-bench-deploy-{uuid.uuid4().hex[:8]}:"
    started: list[Served] = []
    try:
        upgrade(db_url)

        async def seed() -> None:
            from abiquo_central.db.engine import create_engine

            engine = create_engine(db_url, pool_size=1, echo=False)
            try:
                await ensure_admin(engine, password=ADMIN_PASSWORD)
            finally:
                await engine.dispose()

        uvloop.run(seed())
        with tempfile.TemporaryDirectory(prefix="abiquo-bench-deploy-") as tmp:
            central = Served.start(
                "serve-central", db_url, rabbitmq_url, f"{tmp}/central.key", script=__file__
            )
            started.append(central)
            dc = Served.start(
                "serve-dc", rabbitmq_url, args.redis_url, redis_prefix, tmp, script=__file__
            )
            started.append(dc)
            outcome, wall, cpu_central, cpu_dc = uvloop.run(measure(args, db_url, central, dc))
            for served in reversed(started):
                served.stop()
            started.clear()
        base_rate, base_cpu = uvloop.run(baseline(args.vms, args.hosts))
    finally:
        for served in reversed(started):
            served.stop()
        delete_vhost(vhost)
        delete_redis_keys(args.redis_url, redis_prefix)
        drop_database(db_url)

    done = len(outcome.latencies)
    print(
        f"\n{args.vms:,} VMs on {args.hosts} simulated hosts, {args.clients} clients "
        f"polling every {args.poll} s ({outcome.gets:,} GETs, {outcome.gets / max(done, 1):.1f} "
        f"a deploy); ratio: the figure ÷ the baseline's, in the same run"
    )
    if done:
        rate = done / wall
        print(f"{'baseline: simulator driver directly':<44} {base_rate:>9,.1f} deploys/s")
        print(
            f"{'through the API, central and the DC':<44} {rate:>9,.1f} deploys/s"
            f"   ratio {rate / base_rate:.4f}   ({done:,} ON in {wall:.1f} s)"
        )
        print(
            f"{'POST deploy → ON in the API':<44} p50 {percentile(outcome.latencies, 0.5):.2f} s"
            f"   p99 {percentile(outcome.latencies, 0.99):.2f} s"
        )
        print(
            f"{'  of which POST deploy → 202':<44} p50 {percentile(outcome.accepted, 0.5):.2f} s"
            f"   p99 {percentile(outcome.accepted, 0.99):.2f} s"
        )
        print(f"{'CPU ms/deploy, baseline (driver directly)':<44} {1000 * base_cpu:>9.3f}")
        deploys_only = max(cpu_central - outcome.cpu_of_gets, 0.0)
        for name, cpu in (
            ("central", cpu_central),
            ("  central without the polling GETs", deploys_only),
            ("the DC", cpu_dc),
        ):
            per = cpu / done
            print(
                f"{'CPU ms/deploy, ' + name:<44} {1000 * per:>9.3f}   ratio {per / base_cpu:,.1f}"
                f"   ({cpu:.1f} s in all)"
            )
    if outcome.failures:
        print(f"\nFAILED: {len(outcome.failures)} problems", file=sys.stderr)
        for problem in outcome.failures[:20]:
            print(f"  {problem}", file=sys.stderr)
        return 1
    print("\nchecked: every VM read ON in the API and is on its simulated host")
    return 0


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "serve-central":
        return serve_central(*sys.argv[2:5])
    if len(sys.argv) > 1 and sys.argv[1] == "serve-dc":
        return serve_dc(*sys.argv[2:6])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--vms", type=int, default=2000)
    parser.add_argument("--hosts", type=int, default=100)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--poll", type=float, default=0.25, help="seconds between GETs of a VM")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds one deploy may take")
    parser.add_argument("--db-url", default="mysql+aiomysql://root@127.0.0.1:3306")
    parser.add_argument("--rabbitmq-url", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    if args.vms < 1 or args.hosts < 1 or args.clients < 1:
        parser.error("--vms, --hosts and --clients must be at least 1")
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
