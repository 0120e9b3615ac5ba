"""Domains through a real thrift server and client, over libvirt's test driver."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from aim.domains import DomainGroup
from aim.libvirt_host import LibvirtHost
from tests.aim.conftest import serving

# test:///default is one shared driver per process: each test opens the test driver on a
# node file of its own, and so starts from an empty host.
NODE_XML = (
    "<node><cpu><nodes>1</nodes><sockets>1</sockets><cores>2</cores><threads>1</threads>"
    "<active>2</active><mhz>2000</mhz><model>i686</model></cpu>"
    "<memory>8388608</memory></node>"
)


def domain_xml(name: str = "vm1", uid: str = "5d6ba1e0-3c2b-4a7e-9d0c-0f4b5a6c7d8e") -> str:
    return (
        f"<domain type='test'><name>{name}</name><uuid>{uid}</uuid>"
        "<memory>1048576</memory><vcpu>1</vcpu>"
        "<os><type>hvm</type></os><devices>"
        "<disk type='file' device='disk'><source file='/var/lib/virt/vm1.img'/>"
        "<target dev='vda'/></disk></devices></domain>"
    )


@pytest.fixture
def node_uri(tmp_path: Path) -> str:
    node = tmp_path / "node.xml"
    node.write_text(NODE_XML)
    return f"test://{node}"


@contextlib.asynccontextmanager
async def aim(
    contract: ModuleType, uri: str, make: Sequence[Any], *, call_timeout: float = 10.0
) -> AsyncIterator[tuple[Any, LibvirtHost]]:
    """A fresh host, the groups `make(contract, host)` builds on it, served over thrift."""
    host = LibvirtHost(uri, threads=2, call_timeout=call_timeout)
    groups = [host, *(m(contract, host) for m in make)]
    async with serving(contract, groups) as client:
        yield client, host


def domains(contract: ModuleType, host: LibvirtHost) -> DomainGroup:
    return DomainGroup(contract=contract, host=host)


async def test_node_info(contract: ModuleType, node_uri: str) -> None:
    async with aim(contract, node_uri, [domains]) as (client, _):
        info = await client.getNodeInfo()
    assert info.hypervisorType == "TEST"
    assert (info.cpus, info.mhz, info.cores, info.sockets, info.threads) == (2, 2000, 2, 1, 1)
    assert info.cpuModel == "i686"
    assert info.memoryBytes == 8 * 1024**3
    assert info.libvirtVersion >= 9_000_000


async def test_define_list_and_undefine(contract: ModuleType, node_uri: str) -> None:
    async with aim(contract, node_uri, [domains]) as (client, _):
        assert await client.getDomains() == []
        uid = await client.defineDomain(domain_xml())
        assert uid == "5d6ba1e0-3c2b-4a7e-9d0c-0f4b5a6c7d8e"
        assert await client.defineDomain(domain_xml()) == uid  # a redefine
        assert await client.existDomain(uid)
        assert await client.getDomainState(uid) == contract.DomainState.SHUTOFF
        info = await client.getDomainInfo(uid)
        assert (info.uuid, info.name, info.virtualCpus) == (uid, "vm1", 1)
        assert info.maxMemoryBytes == 1024**3 and info.persistent and not info.autostart
        assert [d.uuid for d in await client.getDomains()] == [uid]
        await client.undefineDomain(uid)
        assert not await client.existDomain(uid)
        assert await client.getDomains() == []


async def test_power_cycle_is_idempotent(contract: ModuleType, node_uri: str) -> None:
    state = contract.DomainState
    async with aim(contract, node_uri, [domains]) as (client, _):
        uid = await client.defineDomain(domain_xml())
        for _ in range(2):
            await client.powerOn(uid)
            assert await client.getDomainState(uid) == state.RUNNING
        for _ in range(2):
            await client.pause(uid)
            assert await client.getDomainState(uid) == state.PAUSED
        for _ in range(2):
            await client.resume(uid)
            assert await client.getDomainState(uid) == state.RUNNING
        await client.reset(uid)
        assert await client.getDomainState(uid) == state.RUNNING
        await client.shutdown(uid)
        assert await client.getDomainState(uid) == state.SHUTOFF
        await client.shutdown(uid)
        await client.powerOn(uid)
        for _ in range(2):
            await client.powerOff(uid)
            assert await client.getDomainState(uid) == state.SHUTOFF


async def test_bad_input_and_the_server_keeps_serving(contract: ModuleType, node_uri: str) -> None:
    missing = str(uuid.uuid4())
    async with aim(contract, node_uri, [domains]) as (client, _):
        uid = await client.defineDomain(domain_xml())
        for call in (
            client.getDomainState,
            client.getDomainInfo,
            client.undefineDomain,
            client.powerOn,
            client.powerOff,
            client.shutdown,
            client.reset,
            client.pause,
            client.resume,
        ):
            with pytest.raises(contract.LibvirtException) as missing_error:
                await call(missing)
            assert missing_error.value.code == "LIBVIRT-NOT-FOUND", call
            with pytest.raises(contract.LibvirtException) as malformed:
                await call("not-a-uuid")
            assert malformed.value.code == "LIBVIRT-INVALID"
        assert not await client.existDomain(missing)
        with pytest.raises(contract.LibvirtException) as bad:
            await client.existDomain("nope")
        assert bad.value.code == "LIBVIRT-INVALID"
        for xml in ("<domain", "<domain type='test'><name>x</name></domain>", ""):
            with pytest.raises(contract.LibvirtException) as bad:
                await client.defineDomain(xml)
            assert bad.value.code == "LIBVIRT-INVALID", xml
        # Acting on a domain in the wrong state: reset and pause need it running.
        for call in (client.reset, client.pause, client.resume):
            with pytest.raises(contract.LibvirtException) as wrong:
                await call(uid)
            assert wrong.value.code == "LIBVIRT-STATE"
        assert await client.getDomainState(uid) == contract.DomainState.SHUTOFF


async def test_a_call_past_its_timeout(contract: ModuleType, node_uri: str) -> None:
    import threading

    release = threading.Event()
    async with aim(contract, node_uri, [], call_timeout=0.2) as (_, host):
        with pytest.raises(contract.LibvirtException) as late:
            await host.call(release.wait, 5)
        assert late.value.code == "LIBVIRT-TIMEOUT"
        release.set()
        assert await host.call(host.conn.getType) == "TEST"
