"""All-in-one: central, one datacenter and an AIM in one process, on 127.0.0.1.

SQLite instead of MySQL and the in-process broker instead of RabbitMQ: only those
adapters differ, every code path above them is the one production runs. The state
(database, the datacenter's identity) lives in one directory, so a restart finds it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import msgspec
import structlog

from abiquo_central.app import Central
from abiquo_central.db.migrate import upgrade
from abiquo_central.infrastructure.datacenters import ensure_datacenter
from abiquo_central.settings import CentralSettings, DatabaseSettings, SecretsSettings
from abiquo_central.tenants.seed import ensure_admin
from abiquo_cli.demo_infrastructure import register_demo_infrastructure
from abiquo_dc.am.ovf import OvfDisk, OvfFile, render_envelope, safe_relative
from abiquo_dc.am.qemu import create_image
from abiquo_dc.app import build_datacenter
from abiquo_dc.identity import datacenter_uuid
from abiquo_dc.protocol.definitions import DiskFormat
from abiquo_dc.settings import DatacenterSettings, DCSettings, RedisSettings
from abiquo_dc.settings import RepositorySettings as DcRepositorySettings
from abiquo_runtime.messaging.memory import MemoryBroker
from abiquo_runtime.settings import HttpSettings, LogSettings, ShutdownSettings
from abiquo_runtime.shutdown import Stage
from aim.server import AimServer
from aim.settings import (
    AimSettings,
    LibvirtSettings,
    ListenSettings,
    NetworkSettings,
    RepositorySettings,
)

DEMO_HOST = Path(__file__).with_name("demo-host.xml")
# The demo template, in enterprise 1's repository: an empty 64 MiB qcow2 disk, enough
# for a VM to be deployed out of the box.
DEMO_ENTERPRISE = "1"
DEMO_DIR = "demo-tiny"
DEMO_DISK_BYTES = 64 * 1024**2


class AllInOneSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # The API's address; the datacenter's and the AIM's ports come next to it.
    http: HttpSettings = msgspec.field(default_factory=HttpSettings)
    # 0: the port after the API's.
    dc_port: int = 0
    # 0: the port two after the API's (any free one when the API's is 0). Fixed, so that
    # the demo host registered as a machine is found where it was at the next start.
    aim_port: int = 0
    state_dir: str = "var/all-in-one"
    datacenter_name: str = "all-in-one"
    datacenter_location: str = "localhost"
    heartbeat_interval: float = 5.0
    log: LogSettings = msgspec.field(default_factory=LogSettings)
    shutdown: ShutdownSettings = msgspec.field(default_factory=ShutdownSettings)


class AllInOne:
    """The three programs sharing one loop and one in-process broker."""

    def __init__(self, settings: AllInOneSettings, *, admin_password: str | None) -> None:
        self.settings = settings
        self.admin_password = admin_password
        self.generated_password: str | None = None
        state = Path(settings.state_dir).resolve()
        self.state_dir = state
        self.database_url = f"sqlite+aiosqlite:///{state / 'central.db'}"
        self.broker = MemoryBroker()
        self.dc_uuid = datacenter_uuid("", state / "dc")
        # The demo KVM host: libvirt's test driver, described by demo-host.xml, behind a
        # real AIM with its repository and datastore in the state directory.
        self.repository = state / "repository"
        self.datastore = state / "datastore"
        self.aim = AimServer(
            AimSettings(
                listen=ListenSettings(
                    host=settings.http.host,
                    port=settings.aim_port or (settings.http.port + 2 if settings.http.port else 0),
                ),
                libvirt=LibvirtSettings(uri=f"test://{DEMO_HOST}"),
                repository=RepositorySettings(path=str(self.repository)),
                datastores=[str(self.datastore)],
                # The demo host's domains are libvirt's test driver's: its VLANs too.
                network=NetworkSettings(simulated_vlans=True),
                shutdown=settings.shutdown,
                log=settings.log,
            )
        )
        self.central = Central(
            CentralSettings(
                http=settings.http,
                log=settings.log,
                shutdown=settings.shutdown,
                database=DatabaseSettings(url=self.database_url, pool_size=5),
                secrets=SecretsSettings(key_file=str(state / "central-secrets.key")),
            ),
            transport=self.broker.connection("central"),
        )
        self.datacenter = build_datacenter(
            DCSettings(
                datacenter=DatacenterSettings(
                    uuid=self.dc_uuid,
                    name=settings.datacenter_name,
                    location=settings.datacenter_location,
                    state_dir=str(state / "dc"),
                    heartbeat_interval=settings.heartbeat_interval,
                ),
                http=HttpSettings(
                    host=settings.http.host,
                    port=settings.dc_port or (settings.http.port + 1 if settings.http.port else 0),
                ),
                log=settings.log,
                shutdown=settings.shutdown,
                # The VSM's state in the process, as the broker and the database are.
                redis=RedisSettings(url=""),
                # The repository the demo host's AIM reads too.
                repository=DcRepositorySettings(
                    path=str(self.repository), mark_file=self.aim.settings.repository.mark_file
                ),
            ),
            transport=self.broker.connection("datacenter"),
            dc_uuid=self.dc_uuid,
        )

    @property
    def api_url(self) -> str:
        return f"{self.central.url}/api"

    async def start(self) -> None:
        for directory in (self.state_dir, self.repository, self.datastore):
            directory.mkdir(parents=True, exist_ok=True)
        mark = self.repository / self.aim.settings.repository.mark_file
        if not mark.exists():
            mark.touch()
        await ensure_demo_template(self.repository)
        # Migrations are synchronous (alembic): off the loop.
        await asyncio.to_thread(upgrade, self.database_url)
        engine = self.central.engine
        self.generated_password = await ensure_admin(engine, password=self.admin_password)
        await ensure_datacenter(
            engine,
            uuid=self.dc_uuid,
            name=self.settings.datacenter_name,
            location=self.settings.datacenter_location,
        )
        await self.aim.start()
        await self.datacenter.start()
        await self.central.start()
        # Over what the API itself uses, once all three run: the DC answers discovery.
        await register_demo_infrastructure(
            self.central,
            dc_uuid=self.dc_uuid,
            dc_url=self.datacenter.server.url,
            name=self.settings.datacenter_name,
            location=self.settings.datacenter_location,
            host_address=self.settings.http.host,
            host_port=self.aim.port,
        )

    def shutdown_stages(self) -> Sequence[Stage]:
        """Each stage of central, the datacenter and the AIM run together, in that order of
        stages: nothing is closed before all three have stopped accepting and drained."""
        merged: list[Stage] = []
        per_program = [
            self.central.shutdown_stages(),
            self.datacenter.shutdown_stages(),
            self.aim.shutdown_stages(),
        ]
        for stages in zip(*per_program, strict=True):
            stage = Stage(stages[0].name, max(s.timeout for s in stages))
            names = ("central", "dc", "aim")
            for program, part in zip(names, stages, strict=True):
                for name, step in part.steps:
                    stage.add(f"{program} {name}", step)
            merged.append(stage)
        return merged


async def ensure_demo_template(repository: Path) -> Path | None:
    """The demo template in enterprise 1's repository, made once: its directory, or None
    when qemu-img is missing (the all-in-one runs without it, and says so).

    It is built beside its place and renamed into it, so a start that is cut short leaves
    no half template behind; the AM finds it when it scans the repository at start.
    """
    enterprise = repository / DEMO_ENTERPRISE
    final = enterprise / DEMO_DIR
    if await asyncio.to_thread(final.is_dir):
        return final
    if shutil.which("qemu-img") is None:
        structlog.get_logger("abiquo.all-in-one").warning(
            "no demo template: qemu-img is not installed (apt-get install qemu-utils)"
        )
        return None
    building = enterprise / ".incoming" / f"{DEMO_DIR}-{os.getpid()}"
    await asyncio.to_thread(shutil.rmtree, building, True)
    await asyncio.to_thread(building.mkdir, 0o755, True)
    disk = building / f"{DEMO_DIR}.qcow2"
    await create_image(disk, fmt="qcow2", size=DEMO_DISK_BYTES)
    size = (await asyncio.to_thread(disk.stat)).st_size
    envelope = render_envelope(
        name="Demo (tiny)",
        description="An empty 64 MiB disk to try deployments with",
        files=[OvfFile(id="file1", href=disk.name, path=safe_relative(disk.name), size=size)],
        disks=[
            OvfDisk(
                disk_id="disk1",
                file_id="file1",
                capacity_bytes=DEMO_DISK_BYTES,
                format=DiskFormat.QCOW2_SPARSE,
            )
        ],
        cpu=1,
        ram_mb=64,
        category="Demo",
    )
    await asyncio.to_thread((building / f"{DEMO_DIR}.ovf").write_bytes, envelope)
    try:
        await asyncio.to_thread(building.rename, final)
    except OSError:
        # Made meanwhile by another start over the same state directory.
        await asyncio.to_thread(shutil.rmtree, building, True)
    return final


def announce(aio: AllInOne, out: TextIO | None = None) -> None:
    stream = out if out is not None else sys.stdout
    lines = []
    if aio.generated_password is not None:
        lines.append(
            f"Cloud administrator: admin / {aio.generated_password} "
            "(shown this once; set ABIQUO_ADMIN_PASSWORD to choose it)"
        )
    lines.append(
        f"Demo KVM host: its AIM is at {aio.settings.http.host}:{aio.aim.port} "
        "(libvirt's test driver)"
    )
    # Last, so that whoever waits for this line has everything before it.
    lines.append(f"Abiquo all-in-one: the API is at {aio.api_url}")
    print("\n".join(lines), file=stream, flush=True)
    structlog.get_logger("abiquo.all-in-one").info(
        "all-in-one ready", api=aio.api_url, datacenter=aio.dc_uuid
    )


def admin_password_from_env() -> str | None:
    return os.environ.get("ABIQUO_ADMIN_PASSWORD") or None
