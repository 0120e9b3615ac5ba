"""The AIM without its libvirtd: it starts and serves anyway, answers LIBVIRT-UNAVAILABLE
where libvirt is needed, and connects by itself when libvirtd comes, or comes back."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import pytest
from thriftpy2.contrib.aio.protocol.binary import TAsyncBinaryProtocolFactory
from thriftpy2.contrib.aio.rpc import make_client
from thriftpy2.contrib.aio.transport.framed import TAsyncFramedTransportFactory

from abiquo_dc.hypervisors.base import HostUnreachable
from abiquo_dc.hypervisors.kvm import KvmDriver
from abiquo_dc.protocol.definitions import HypervisorConnection, HypervisorType
from aim.server import AimServer
from aim.settings import AimSettings, LibvirtSettings, ListenSettings, RepositorySettings
from tests.aim.restartable_libvirtd import RestartableLibvirtd
from tests.aim.restartable_libvirtd import restartable_libvirtd as restartable_libvirtd

T = TypeVar("T")

DOMAIN = (
    "<domain type='test'><name>retry-vm</name>"
    "<uuid>1b4e28ba-2fa1-11d2-883f-0016d3cca427</uuid>"
    "<memory>65536</memory><vcpu>1</vcpu><os><type>hvm</type></os></domain>"
)
# A cursor beyond any sequence: the answer is "resync, from the last sequence".
NOW = 2**62


@contextlib.asynccontextmanager
async def aim_over(uri: str, tmp_path: Path) -> AsyncIterator[tuple[Any, int]]:
    """The whole AIM over `uri`, retrying fast; yields a thrift client and its port."""
    repository = tmp_path / "repo"
    repository.mkdir()
    (repository / ".abiquo_repository").touch()
    server = AimServer(
        AimSettings(
            listen=ListenSettings(host="127.0.0.1", port=0),
            libvirt=LibvirtSettings(
                uri=uri, call_timeout=5.0, retry_delay=0.05, max_retry_delay=0.2
            ),
            repository=RepositorySettings(path=str(repository)),
            datastores=[str(tmp_path)],
        )
    )
    await server.start()
    client = None
    try:
        client = await make_client(
            server.contract.Aim,
            "127.0.0.1",
            server.port,
            trans_factory=TAsyncFramedTransportFactory(),
            proto_factory=TAsyncBinaryProtocolFactory(),
            timeout=10_000,
        )
        yield client, server.port
    finally:
        if client is not None:
            client.close()
        await server.stop_accepting()
        await server.drain()
        await server.close()


async def eventually(call: Callable[[], Awaitable[T]], timeout: float = 15.0) -> T:
    """`call()`'s answer once it stops failing with LIBVIRT-UNAVAILABLE."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                return await call()
            except Exception as exc:
                if getattr(exc, "code", None) != "LIBVIRT-UNAVAILABLE":
                    raise
            await asyncio.sleep(0.05)


async def unavailable(contract: ModuleType, call: Callable[[], Awaitable[Any]]) -> None:
    with pytest.raises(contract.LibvirtException) as failed:
        await call()
    assert failed.value.code == "LIBVIRT-UNAVAILABLE"


def logged(caplog: pytest.LogCaptureFixture, event: str) -> int:
    return sum(event in r.getMessage() for r in caplog.records)


async def test_the_aim_starts_before_libvirtd_and_connects_when_it_comes(
    contract: ModuleType,
    restartable_libvirtd: RestartableLibvirtd,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with aim_over(restartable_libvirtd.test_uri, tmp_path) as (client, port):
        # Up and serving what needs no libvirt...
        info = await client.getAgentInfo()
        assert info.libvirtUri == restartable_libvirtd.test_uri
        await client.checkRimpConfiguration()
        # ...and saying libvirt is away where it is needed, which the DC takes for an
        # unreachable host (to retry), not for a failure.
        await unavailable(contract, client.getNodeInfo)
        await unavailable(contract, client.getDomains)
        driver = KvmDriver(
            HypervisorConnection(type=HypervisorType.KVM, address="127.0.0.1", port=port),
            timeout=5.0,
        )
        with pytest.raises(HostUnreachable, match="not connected"):
            await driver.connect()
        await asyncio.sleep(0.3)  # a few attempts, each logged
        assert logged(caplog, "libvirt unreachable") >= 2

        await asyncio.to_thread(restartable_libvirtd.start)
        node = await eventually(client.getNodeInfo)
        assert node.hypervisorType == "TEST"
        # Connected with everything a connection brings: the lifecycle events too.
        start = (await client.waitEvents(NOW, 1, 0)).cursor
        uid = await client.defineDomain(DOMAIN)
        batch = await client.waitEvents(start, 10, 5_000)
        assert [(e.domainUuid, e.type) for e in batch.events] == [(uid, contract.EventType.CREATED)]
        await driver.connect()
        try:
            assert uid in {vm.uuid for vm in await driver.list_vms()}
        finally:
            await driver.close()


async def test_the_aim_reconnects_when_libvirtd_comes_back(
    contract: ModuleType,
    restartable_libvirtd: RestartableLibvirtd,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    await asyncio.to_thread(restartable_libvirtd.start)
    async with aim_over(restartable_libvirtd.test_uri, tmp_path) as (client, _):
        uid = await client.defineDomain(DOMAIN)
        cursor = (await client.waitEvents(0, 10, 5_000)).cursor
        assert cursor == 1

        await asyncio.to_thread(restartable_libvirtd.stop)
        # The loss is noticed (libvirt's close callback, or the first call that fails).
        async with asyncio.timeout(10):
            while True:
                try:
                    await client.getDomains()
                except contract.LibvirtException as exc:
                    assert exc.code == "LIBVIRT-UNAVAILABLE"
                    break
                await asyncio.sleep(0.05)

        await asyncio.to_thread(restartable_libvirtd.start)
        # A new daemon, a new test driver: the domain defined before is gone with it.
        domains = await eventually(client.getDomains)
        assert uid not in {d.uuid for d in domains}
        assert logged(caplog, "libvirt connected") >= 2
        # Events while libvirtd was away were not seen: a monitor at the old cursor is
        # told to resynchronise, and goes on after the gap.
        batch = await client.waitEvents(cursor, 10, 0)
        assert batch.resync and batch.events == [] and batch.cursor > cursor
        again = await client.defineDomain(DOMAIN)
        after = await client.waitEvents(batch.cursor, 10, 5_000)
        assert not after.resync
        assert [(e.domainUuid, e.type) for e in after.events] == [
            (again, contract.EventType.CREATED)
        ]
