"""Requests per second of central's API on MariaDB, with 25,000 machines in one rack.

The API runs in a process of its own (uvloop, the default pool size, as the service
runs it), so that the load generator does not share its CPU; the machine has 2 cores.
50 concurrent clients (aiohttp) send, each for `--seconds`:

- GET one machine (a random one of the 25,000);
- GET a page of the machine listing (limit 25, a random startwith over the whole
  listing, deep pages included), with its p50 and p99 latency;

each as a ratio to a bare aiohttp handler answering a constant body of the same size,
served the same way (its own process, uvloop, no middlewares), in the same run, since
these machines are shared and noisy.

The load authenticates with a session token (GET /api/login once, then
`Authorization: Token <t>`): with Basic every request would verify an argon2 hash, and
that, not the API, is what would be measured.

    .venv/bin/python bench/api.py [--db-url mysql+aiomysql://root@127.0.0.1:3306]
        [--machines 25000] [--clients 50] [--seconds 10]

It creates a database of its own on that server and drops it at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import random
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
import uvloop
from aiohttp import web
from cryptography.fernet import Fernet
from sqlalchemy import insert, select
from sqlalchemy.engine import make_url

from abiquo_central.db import tables
from abiquo_central.db.engine import create_engine
from abiquo_central.db.migrate import upgrade
from abiquo_central.infrastructure.datacenters import record_heartbeat

ADMIN_PASSWORD = "bench-admin-password"
DC_UUID = str(uuid.uuid4())
BATCH = 1000


# ---------------------------------------------------------------- the served side


def _listen() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    # The parent reads the server's URL from the first line.
    print(f"http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    return sock


def serve_api(db_url: str) -> None:
    from abiquo_central.api import build_api
    from abiquo_central.settings import CentralSettings
    from abiquo_runtime.secrets import SecretBox

    settings = CentralSettings()
    engine = create_engine(db_url, pool_size=settings.database.pool_size, echo=False)
    api = build_api(engine=engine, settings=settings, secrets=SecretBox(Fernet.generate_key()))
    root = web.Application()
    root.add_subapp("/api", api)

    async def dispose(_: web.Application) -> None:
        await engine.dispose()

    root.on_cleanup.append(dispose)
    web.run_app(root, sock=_listen(), access_log=None, print=None, loop=uvloop.new_event_loop())


def serve_baseline(one_size: int, page_size: int) -> None:
    one, page = b"x" * one_size, b"x" * page_size

    async def get_one(_: web.Request) -> web.Response:
        return web.Response(body=one, content_type="application/json")

    async def get_page(_: web.Request) -> web.Response:
        return web.Response(body=page, content_type="application/json")

    app = web.Application()
    app.router.add_get("/one", get_one)
    app.router.add_get("/page", get_page)
    web.run_app(app, sock=_listen(), access_log=None, print=None, loop=uvloop.new_event_loop())


@dataclass
class Served:
    """A server in a process of its own: this script (or `script`) run with `args`,
    which prints the server's URL as its first line once it listens."""

    process: subprocess.Popen[str]
    url: str

    @classmethod
    def start(cls, *args: str, script: str = __file__) -> Served:
        process = subprocess.Popen(
            [sys.executable, script, *args], stdout=subprocess.PIPE, text=True
        )
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        if not url.startswith("http"):
            process.kill()
            raise SystemExit(f"{args[0]} did not start: {url!r}")
        return cls(process, url)

    def cpu(self) -> float:
        """User + system CPU seconds of the process (every thread) so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        # After the command's closing parenthesis: state is field 3, utime 14, stime 15.
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


# ---------------------------------------------------------------- the database


def create_database(server_url: str) -> str:
    import pymysql

    url = make_url(server_url)
    name = f"abiquo_bench_{uuid.uuid4().hex[:8]}"
    conn = pymysql.connect(
        host=url.host or "127.0.0.1",
        port=url.port or 3306,
        user=url.username or "root",
        password=url.password or "",
    )
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    conn.close()
    return url.set(database=name).render_as_string(hide_password=False)


def drop_database(db_url: str) -> None:
    import pymysql

    url = make_url(db_url)
    conn = pymysql.connect(
        host=url.host or "127.0.0.1",
        port=url.port or 3306,
        user=url.username or "root",
        password=url.password or "",
    )
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{url.database}`")
    conn.close()


async def heartbeat(db_url: str, sequence: int, started: datetime) -> None:
    engine = create_engine(db_url, pool_size=1, echo=False)
    try:
        now = datetime.now(UTC)
        await record_heartbeat(
            engine,
            dc_uuid=DC_UUID,
            name="bench",
            sequence=sequence,
            started_at=started,
            sent_at=now,
            received_at=now,
            http_url="http://127.0.0.1:1",
            services={},
        )
    finally:
        await engine.dispose()


async def populate(db_url: str, machines: int) -> tuple[int, int, list[int]]:
    """The admin, one datacenter with one rack of `machines` machines (a datastore each).

    Returns the datacenter's, the rack's and the machines' ids.
    """
    from abiquo_central.tenants.seed import ensure_admin

    engine = create_engine(db_url, pool_size=1, echo=False)
    now = datetime.now(UTC)
    try:
        await ensure_admin(engine, password=ADMIN_PASSWORD, now=now)
        async with engine.begin() as conn:
            dc = (
                await conn.execute(
                    insert(tables.datacenter).values(
                        uuid=DC_UUID, name="bench", location="here", created_at=now
                    )
                )
            ).inserted_primary_key[0]
            rack = (
                await conn.execute(
                    insert(tables.rack).values(
                        datacenter_id=dc,
                        name="rack",
                        vlan_id_min=2,
                        vlan_id_max=4094,
                        created_at=now,
                    )
                )
            ).inserted_primary_key[0]
            for start in range(0, machines, BATCH):
                rows = [
                    {
                        "datacenter_id": dc,
                        "rack_id": rack,
                        "name": f"host-{n:05d}",
                        "description": "",
                        "ip": f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}",
                        "ip_service": "",
                        "type": "KVM",
                        "port": 8889,
                        "user": "root",
                        "password_secret": "",
                        "state": "MANAGED",
                        "cpu": 32,
                        "ram": 131072,
                        "cpu_used": 0,
                        "ram_used": 0,
                        "virtual_switch": "br0",
                        "initiator_iqn": "",
                        "created_at": now,
                    }
                    for n in range(start, min(start + BATCH, machines))
                ]
                await conn.execute(insert(tables.machine), rows)
            ids = list(
                (
                    await conn.execute(
                        select(tables.machine.c.id).where(tables.machine.c.rack_id == rack)
                    )
                ).scalars()
            )
            for start in range(0, len(ids), BATCH):
                await conn.execute(
                    insert(tables.datastore),
                    [
                        {
                            "machine_id": m,
                            "name": "datastore1",
                            "root_path": "/var/lib/virt",
                            "directory": "abiquo",
                            "size": 2 * 1024**4,
                            "used_size": 0,
                            "enabled": True,
                            "datastore_uuid": "",
                        }
                        for m in ids[start : start + BATCH]
                    ],
                )
        return dc, rack, ids
    finally:
        await engine.dispose()


# ---------------------------------------------------------------- the load


@dataclass
class Result:
    rate: float
    latencies: list[float] = field(default_factory=list)
    errors: int = 0

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * p))] * 1000


async def load(
    session: aiohttp.ClientSession,
    next_url: Callable[[random.Random], str],
    *,
    clients: int,
    seconds: float,
    headers: dict[str, str],
) -> Result:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def client(seed: int) -> None:
        nonlocal errors
        rng = random.Random(seed)
        while time.perf_counter() < deadline:
            url = next_url(rng)
            started = time.perf_counter()
            async with session.get(url, headers=headers) as response:
                await response.read()
                if response.status != 200:
                    errors += 1
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(client(n) for n in range(clients)))
    elapsed = time.perf_counter() - started
    return Result(len(latencies) / elapsed, latencies, errors)


async def keep_alive(db_url: str, started: datetime, stop: asyncio.Event) -> None:
    """Heartbeats every 5 s, so that the datacenter stays available (liveness 15 s)."""
    sequence = 1
    while not stop.is_set():
        sequence += 1
        await heartbeat(db_url, sequence, started)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=5)


async def measure(args: argparse.Namespace, db_url: str) -> None:
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    dc, rack, ids = await populate(db_url, args.machines)
    print(f"populated {len(ids):,} machines in {time.perf_counter() - t0:.1f} s", flush=True)
    await heartbeat(db_url, 1, started)
    stop = asyncio.Event()
    beating = asyncio.ensure_future(keep_alive(db_url, started, stop))
    api = Served.start("serve-api", db_url)
    baseline: Served | None = None
    try:
        connector = aiohttp.TCPConnector(limit=args.clients)
        async with aiohttp.ClientSession(connector=connector) as session:
            basic = base64.b64encode(f"admin:{ADMIN_PASSWORD}".encode()).decode()
            async with session.get(
                f"{api.url}/api/login", headers={"Authorization": f"Basic {basic}"}
            ) as response:
                assert response.status == 200, await response.text()
                token = response.headers["X-Abiquo-Token"]
            auth = {"Authorization": f"Token {token}"}
            machines = f"{api.url}/api/admin/datacenters/{dc}/racks/{rack}/machines"
            async with session.get(f"{machines}/{ids[0]}", headers=auth) as response:
                assert response.status == 200, await response.text()
                one_size = len(await response.read())
            async with session.get(f"{machines}?limit=25", headers=auth) as response:
                assert response.status == 200, await response.text()
                page_size = len(await response.read())
            async with session.get(f"{api.url}/api/admin/datacenters/{dc}", headers=auth) as r:
                available = (await r.json()).get("available")
            print(
                f"a machine is {one_size:,} bytes, a page of 25 {page_size:,} bytes; "
                f"the datacenter is available: {available}",
                flush=True,
            )
            baseline = Served.start("serve-baseline", str(one_size), str(page_size))
            last_page = max(0, len(ids) - 25)

            def one_machine(rng: random.Random) -> str:
                return f"{machines}/{rng.choice(ids)}"

            def a_page(rng: random.Random) -> str:
                return f"{machines}?limit=25&startwith={rng.randint(0, last_page)}"

            runs: list[tuple[str, Callable[[], Awaitable[Result]]]] = []

            def run(
                url_of: Callable[[random.Random], str], headers: dict[str, str]
            ) -> Callable[[], Awaitable[Result]]:
                return lambda: load(
                    session, url_of, clients=args.clients, seconds=args.seconds, headers=headers
                )

            assert baseline is not None
            base = baseline.url
            runs = [
                ("warm-up (not counted)", run(one_machine, auth)),
                ("baseline: constant body, machine size", run(lambda _: f"{base}/one", {})),
                ("baseline: constant body, page size", run(lambda _: f"{base}/page", {})),
                ("GET one machine", run(one_machine, auth)),
                ("GET a page of 25 machines (any startwith)", run(a_page, auth)),
            ]
            results: dict[str, Result] = {}
            for name, go in runs:
                results[name] = await go()
    finally:
        api.stop()
        if baseline is not None:
            baseline.stop()
        stop.set()
        await beating

    base_one = results["baseline: constant body, machine size"]
    base_page = results["baseline: constant body, page size"]
    print(f"\n{args.clients} clients, {args.seconds:.0f} s each, {len(ids):,} machines in one rack")
    for name, against in (
        ("baseline: constant body, machine size", base_one),
        ("baseline: constant body, page size", base_page),
        ("GET one machine", base_one),
        ("GET a page of 25 machines (any startwith)", base_page),
    ):
        got = results[name]
        print(
            f"{name:<45} {got.rate:>9,.0f} req/s   ratio {got.rate / against.rate:7.4f}"
            f"   p50 {got.percentile(0.5):7.1f} ms   p99 {got.percentile(0.99):7.1f} ms"
            + (f"   ERRORS {got.errors}" if got.errors else "")
        )
    deep = results["GET a page of 25 machines (any startwith)"]
    print(
        f"\nlist page latency: p50 {deep.percentile(0.5):.1f} ms, p99 {deep.percentile(0.99):.1f}"
        f" ms (mean {statistics.fmean(deep.latencies) * 1000:.1f} ms)"
    )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "serve-api":
        serve_api(sys.argv[2])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "serve-baseline":
        serve_baseline(int(sys.argv[2]), int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db-url", default="mysql+aiomysql://root@127.0.0.1:3306")
    parser.add_argument("--machines", type=int, default=25_000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    db_url = create_database(args.db_url)
    try:
        upgrade(db_url)
        uvloop.run(measure(args, db_url))
    finally:
        drop_database(db_url)


if __name__ == "__main__":
    main()
