"""A ready KVM host for the KVM driver: a real AIM over libvirt's test driver.

`running_kvm_host(root, libvirtd=...)`, an async context manager, brings up an AIM server
(the whole agent, aim.server.AimServer) in this process on 127.0.0.1 and a free TCP port,
with a repository under `root` (its mark file, two small templates, TEMPLATE and DATA)
and a datastore directory, and yields a `KvmHost`: the HypervisorConnection to give a
driver (type KVM, address, port), the repository and datastore paths, the libvirt URI,
`driver_kwargs()` for KvmDriver, and `definition()` for a VM on this host.

Which libvirt:

- `libvirtd=` the private libvirtd (the session fixture `private_libvirtd` of
  tests.aim.e2e_host): the AIM runs over its test driver, `test+unix:///default?socket=
  <its socket>`, and reports that URI to the datacenter (remoteLibvirtUri), so the driver
  takes domain operations over libvirt itself, seeing the AIM's own state. That test
  driver is one host for the whole session: what a test leaves there is seen by the
  next, so the context manager removes, at its end, the domains that appeared during it.
  The daemon also listens on TCP: `tcp_uri(libvirtd)` is the same host over test+tcp://,
  a remote URI to give the driver (`driver(libvirt_uri=...)`).
- `libvirtd=None`: the AIM runs over a test driver on a node file under `root`, which
  only the AIM's own connection sees; it reports no URI, so domain operations go through
  the AIM. Each such host starts empty, and needs neither root nor a daemon.

Fixtures: `kvm_host` (over the private libvirtd) and `kvm_host_over_aim` (without). A test
module that uses `kvm_host` imports both it and `private_libvirtd`:

    from tests.dc.hypervisors.kvm_host import kvm_host as kvm_host
    from tests.dc.hypervisors.kvm_host import private_libvirtd as private_libvirtd

From another process (a DC the test starts), what it needs is `describe()`: the AIM's
address and port (a HypervisorConnection of type KVM) and, for its templates and
definitions, the repository and datastore paths. The libvirt URI it needs not be told:
the AIM reports it. The process must run as root on this machine (the daemon's socket
is root's, mode 0700), and the AIM is served by the test's event loop, so the test waits
for the process with asyncio (asyncio.create_subprocess_exec, asyncio.sleep), never with
a blocking wait that would stop the AIM answering. A DC builds its KvmDriver from its
own settings: the default domain type ("kvm") does, as libvirt's test driver takes any.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libvirt
import pytest

from abiquo_dc.hypervisors.kvm import KvmDriver
from abiquo_dc.protocol.definitions import (
    DiskFormat,
    HypervisorConnection,
    HypervisorType,
    Nic,
    RepositoryDisk,
    VirtualMachineDefinition,
)
from aim.libvirt_host import LibvirtHost
from aim.server import AimServer
from aim.settings import (
    AimSettings,
    EventsSettings,
    IscsiSettings,
    LibvirtSettings,
    ListenSettings,
    NetworkSettings,
    RepositorySettings,
)
from aim.vlan import SimulatedVlanGroup
from tests.aim.e2e_host import Libvirtd
from tests.aim.e2e_host import private_libvirtd as private_libvirtd

NODE_XML = (
    "<node><cpu><nodes>1</nodes><sockets>1</sockets><cores>2</cores><threads>1</threads>"
    "<active>2</active><mhz>2000</mhz><model>i686</model></cpu>"
    "<memory>8388608</memory></node>"
)
IQN = "iqn.2024-01.com.example:host1"
# Templates in the repository, relative to it.
TEMPLATE = "1/templates/disk.qcow2"
DATA = "1/templates/data.raw"
MARK_FILE = ".abiquo_repository"


def unix_uri(libvirtd: Libvirtd) -> str:
    """The private libvirtd's shared test driver, over its unix socket."""
    return f"test+unix:///default?socket={libvirtd.socket}"


def tcp_uri(libvirtd: Libvirtd) -> str:
    """The same test driver over TCP: a remote URI as a datacenter would use."""
    return f"test+tcp://127.0.0.1:{libvirtd.tcp_port}/default"


@dataclass(frozen=True)
class KvmHost:
    """One ready KVM host: its AIM's address, its directories, its libvirt."""

    connection: HypervisorConnection
    repository: Path
    datastore: Path
    # The URI the AIM runs over.
    libvirt_uri: str
    # The URI the AIM reports for domain operations; "": through the AIM.
    remote_uri: str
    # The AIM's libvirt connection, for a test to look behind the driver's back.
    libvirt: LibvirtHost
    # The VLANs the AIM holds, when it only records them (`recorded_vlans=True`).
    vlans: SimulatedVlanGroup | None = field(default=None)

    @property
    def port(self) -> int:
        return self.connection.port

    def driver_kwargs(self, **overrides: Any) -> dict[str, Any]:
        """KvmDriver's keyword arguments for this host: KvmDriver(connection, **these)."""
        kwargs: dict[str, Any] = {
            "timeout": 10.0,
            # Domain XML of libvirt's test driver (it accepts the others too).
            "domain_type": "test",
            # Short long-polls: a test's stream ends quickly.
            "event_wait": 0.5,
        }
        kwargs.update(overrides)
        return kwargs

    def driver(self, **overrides: Any) -> KvmDriver:
        """A driver for this host, not connected yet."""
        return KvmDriver(self.connection, **self.driver_kwargs(**overrides))

    def describe(self) -> dict[str, Any]:
        """What another process needs to use this host, as JSON-able values."""
        return {
            "type": self.connection.type.value,
            "address": self.connection.address,
            "port": self.connection.port,
            "repository": str(self.repository),
            "datastore": str(self.datastore),
            "libvirt_uri": self.remote_uri,
        }

    def definition(self, *, n_disks: int = 1, **changes: Any) -> VirtualMachineDefinition:
        """A new VM with `n_disks` repository disks (TEMPLATE, DATA, TEMPLATE, ...)."""
        vm = str(uuid.uuid4())
        files = [TEMPLATE, DATA]
        fields: dict[str, Any] = {
            "uuid": vm,
            "name": f"vm-{vm[:8]}",
            "cpu": 1,
            "ram_mb": 256,
            "disks": [
                RepositoryDisk(
                    repository_path=files[i % 2],
                    datastore=str(self.datastore),
                    format=DiskFormat.QCOW2_SPARSE if i % 2 == 0 else DiskFormat.RAW,
                    size_bytes=4096,
                )
                for i in range(n_disks)
            ],
            "nics": [Nic(mac=f"52:54:00:{vm[0:2]}:{vm[2:4]}:{vm[4:6]}", bridge="abiquo_br0")],
        }
        fields.update(changes)
        return VirtualMachineDefinition(**fields)


def _prepare(root: Path) -> tuple[Path, Path, Path]:
    """The repository (with its mark and templates), the datastore and the IQN file;
    left as they are when they exist (a host started again on the same root)."""
    repository, datastore = root / "repo", root / "ds"
    (repository / "1" / "templates").mkdir(parents=True, exist_ok=True)
    datastore.mkdir(exist_ok=True)
    (repository / MARK_FILE).touch()
    for name, content in ((TEMPLATE, b"qcow" * 1024), (DATA, b"data" * 1024)):
        if not (repository / name).exists():
            (repository / name).write_bytes(content)
    iqn_file = root / "initiatorname.iscsi"
    iqn_file.write_text(f"InitiatorName={IQN}\n")
    return repository, datastore, iqn_file


def _domain_uuids(conn: libvirt.virConnect) -> set[str]:
    return {dom.UUIDString() for dom in conn.listAllDomains(0)}


def _remove_domains(conn: libvirt.virConnect, keep: set[str]) -> None:
    for dom in conn.listAllDomains(0):
        if dom.UUIDString() in keep:
            continue
        with contextlib.suppress(libvirt.libvirtError):
            if dom.isActive():
                dom.destroy()
        with contextlib.suppress(libvirt.libvirtError):
            dom.undefine()


@contextlib.asynccontextmanager
async def running_kvm_host(
    root: Path, *, libvirtd: Libvirtd | None = None, port: int = 0, recorded_vlans: bool = False
) -> AsyncIterator[KvmHost]:
    """An AIM on 127.0.0.1:`port` (0: a free one) over libvirt's test driver; see the
    module's docstring. Started again on the same root, it finds its files as left.
    `recorded_vlans`: the AIM only records the VLANs it is asked for ([network]
    simulated_vlans)."""
    repository, datastore, iqn_file = _prepare(root)
    if libvirtd is None:
        node = root / "node.xml"
        node.write_text(NODE_XML)
        uri, remote = f"test://{node}", ""
    else:
        uri = remote = unix_uri(libvirtd)
    server = AimServer(
        AimSettings(
            listen=ListenSettings(host="127.0.0.1", port=port),
            libvirt=LibvirtSettings(uri=uri, remote_uri=remote, threads=4, call_timeout=10.0),
            repository=RepositorySettings(path=str(repository), mark_file=MARK_FILE),
            datastores=[str(datastore)],
            iscsi=IscsiSettings(initiator_name_file=str(iqn_file)),
            events=EventsSettings(history=1000),
            network=NetworkSettings(simulated_vlans=recorded_vlans),
        )
    )
    host = next(g for g in server.groups if isinstance(g, LibvirtHost))
    vlans = next((g for g in server.groups if isinstance(g, SimulatedVlanGroup)), None)
    await server.start()
    try:
        before = await host.call(_domain_uuids, host.conn)
        try:
            yield KvmHost(
                connection=HypervisorConnection(
                    type=HypervisorType.KVM, address="127.0.0.1", port=server.port
                ),
                repository=repository,
                datastore=datastore,
                libvirt_uri=uri,
                remote_uri=remote,
                libvirt=host,
                vlans=vlans,
            )
        finally:
            if libvirtd is not None and host.connected:
                # The daemon's test driver outlives this host: leave it as found.
                await host.call(_remove_domains, host.conn, before)
    finally:
        await server.stop_accepting()
        await server.drain()
        await server.close()


@contextlib.asynccontextmanager
async def hung_libvirt() -> AsyncIterator[str]:
    """A libvirt URI (test+tcp://) whose host accepts connections and never answers."""
    held: list[asyncio.StreamWriter] = []
    ended: list[asyncio.Event] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        end = asyncio.Event()
        ended.append(end)
        try:
            while await reader.read(65536):
                pass  # the client's requests, never answered
        except OSError:
            pass
        finally:
            end.set()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"test+tcp://127.0.0.1:{port}/default"
    finally:
        # The threads stuck on it get their end of file and give up; waiting until they
        # closed their side lets libvirt's clean-up of the connection reach this loop.
        for writer in held:
            writer.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                for end in ended:
                    await end.wait()
        server.close()
        await server.wait_closed()
        await asyncio.sleep(0.05)


@pytest.fixture
async def kvm_host(tmp_path: Path, private_libvirtd: Libvirtd) -> AsyncIterator[KvmHost]:
    """A KVM host whose domains the driver reaches over libvirt (the private libvirtd)."""
    async with running_kvm_host(tmp_path, libvirtd=private_libvirtd) as host:
        yield host


@pytest.fixture
async def kvm_host_over_aim(tmp_path: Path) -> AsyncIterator[KvmHost]:
    """A KVM host of its own whose domains the driver reaches through the AIM."""
    async with running_kvm_host(tmp_path) as host:
        yield host
