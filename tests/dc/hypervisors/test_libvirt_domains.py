"""The libvirt domain channel alone: its errors, its reconnection, and hung hosts.

Most tests use libvirt's test driver on a node file, opened in this process (no daemon
needed); reconnection needs a daemon that goes away and comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import libvirt
import pytest

from abiquo_dc.hypervisors.base import (
    AuthenticationFailed,
    DriverFailure,
    HostUnreachable,
    InvalidDefinition,
    PowerState,
    VmNotFound,
    WrongState,
)
from abiquo_dc.hypervisors.libvirt_domains import LibvirtDomains, translate
from tests.aim.restartable_libvirtd import RestartableLibvirtd
from tests.aim.restartable_libvirtd import restartable_libvirtd as restartable_libvirtd
from tests.dc.hypervisors.kvm_host import NODE_XML, hung_libvirt

MISSING = "00000000-0000-4000-8000-00000000dead"


def domain_xml(name: str, uid: str) -> str:
    return (
        f"<domain type='test'><name>{name}</name><uuid>{uid}</uuid>"
        "<memory unit='MiB'>128</memory><vcpu>2</vcpu><os><type>hvm</type></os></domain>"
    )


@pytest.fixture
def node_uri(tmp_path: Path) -> str:
    node = tmp_path / "node.xml"
    node.write_text(NODE_XML)
    return f"test://{node}"


@contextlib.asynccontextmanager
async def opened(
    uri: str, *, timeout: float = 10.0, threads: int = 4
) -> AsyncIterator[LibvirtDomains]:
    channel = LibvirtDomains(uri, timeout=timeout, threads=threads)
    try:
        await channel.open()
        yield channel
    finally:
        await channel.close()


async def test_operations_and_their_goals(node_uri: str) -> None:
    uid = str(uuid.uuid4())
    async with opened(node_uri) as domains:
        assert domains.kind == "libvirt"
        assert await domains.list() == []
        assert not await domains.exists(uid)
        await domains.define(domain_xml("vm1", uid))
        await domains.define(domain_xml("vm1", uid))  # a redefine
        assert await domains.exists(uid.upper())  # any spelling of the UUID
        vm = await domains.get(uid)
        assert (vm.uuid, vm.name, vm.power_state, vm.cpu, vm.ram_mb) == (
            uid,
            "vm1",
            PowerState.OFF,
            2,
            128,
        )
        for needs_running in (domains.reset, domains.pause, domains.resume):
            with pytest.raises(WrongState):
                await needs_running(uid)
        # Reaching the state it is in already is success, as through the AIM.
        await domains.power_off(uid)
        await domains.shutdown(uid)
        await domains.power_on(uid)
        await domains.power_on(uid)
        await domains.resume(uid)
        assert (await domains.get(uid)).power_state is PowerState.ON
        await domains.pause(uid)
        await domains.pause(uid)
        assert (await domains.get(uid)).power_state is PowerState.PAUSED
        await domains.power_on(uid)  # paused is on: it stays paused
        assert (await domains.get(uid)).power_state is PowerState.PAUSED
        await domains.resume(uid)
        await domains.reset(uid)
        await domains.shutdown(uid)
        assert [v.power_state for v in await domains.list()] == [PowerState.OFF]
        await domains.undefine(uid)
        assert await domains.list() == []


async def test_errors_in_the_taxonomy(node_uri: str) -> None:
    async with opened(node_uri) as domains:
        for call in (domains.get, domains.power_on, domains.undefine, domains.reset):
            with pytest.raises(VmNotFound):
                await call(MISSING)
        with pytest.raises(InvalidDefinition):
            await domains.get("not-a-uuid")
        with pytest.raises(InvalidDefinition):
            await domains.define("<domain")
        first, second = str(uuid.uuid4()), str(uuid.uuid4())
        await domains.define(domain_xml("twin", first))
        # libvirt refuses a second domain of the same name: its own reason, kept.
        with pytest.raises(DriverFailure, match="twin"):
            await domains.define(domain_xml("twin", second))


def test_translation_of_what_the_test_driver_cannot_produce() -> None:
    def error(code: int, domain: int = libvirt.VIR_FROM_REMOTE) -> libvirt.libvirtError:
        err = libvirt.libvirtError("failed")
        err.err = (code, domain, "the message", 2, None, None, None, -1, -1)
        return err

    assert isinstance(translate(error(libvirt.VIR_ERR_AUTH_FAILED), what="x"), AuthenticationFailed)
    assert isinstance(
        translate(error(libvirt.VIR_ERR_AUTH_FAILED), what="x", opening=True),
        AuthenticationFailed,
    )
    assert isinstance(
        translate(error(libvirt.VIR_ERR_INTERNAL_ERROR), what="x", opening=True), HostUnreachable
    )
    for code in (libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_RPC, libvirt.VIR_ERR_INVALID_CONN):
        assert isinstance(translate(error(code), what="x"), HostUnreachable)
    broken = error(libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_FROM_RPC)
    assert isinstance(translate(broken, what="x"), HostUnreachable)
    own = error(libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_FROM_QEMU)
    assert isinstance(translate(own, what="x"), DriverFailure)
    state = translate(error(libvirt.VIR_ERR_OPERATION_INVALID, libvirt.VIR_FROM_DOMAIN), what="x")
    assert isinstance(state, WrongState) and "the message" in str(state)


async def test_a_host_that_does_not_answer_times_out_alone(node_uri: str) -> None:
    """A hung host costs its own calls their timeout; another host's go on meanwhile."""
    async with hung_libvirt() as uri, opened(node_uri) as healthy:
        hung = LibvirtDomains(uri, timeout=1.0)
        try:
            started = time.monotonic()
            opening = asyncio.ensure_future(hung.open())
            slowest = 0.0
            while not opening.done():
                before = time.monotonic()
                await healthy.list()
                slowest = max(slowest, time.monotonic() - before)
                await asyncio.sleep(0.02)
            with pytest.raises(HostUnreachable, match=r"no answer within 1\.0 s"):
                await opening
            assert 1.0 <= time.monotonic() - started < 2.0
            assert slowest < 0.5
            # Its later calls are bounded the same way, queued behind the stuck one or not.
            with pytest.raises(HostUnreachable):
                await hung.list()
        finally:
            await hung.close()


async def test_closing_drops_the_calls_it_has_not_started() -> None:
    async with hung_libvirt() as uri:
        hung = LibvirtDomains(uri, timeout=5.0, threads=1)
        stuck = asyncio.ensure_future(hung.open())
        await asyncio.sleep(0.2)
        queued = asyncio.ensure_future(hung.list())
        await asyncio.sleep(0.05)
        await hung.close()
        with pytest.raises(HostUnreachable, match="closed"):
            await queued
        stuck.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stuck
        with pytest.raises(HostUnreachable):
            await hung.list()


async def test_an_unreachable_uri() -> None:
    channel = LibvirtDomains("test+tcp://127.0.0.1:1/default", timeout=5.0)
    try:
        with pytest.raises(HostUnreachable, match=r"127\.0\.0\.1:1\b"):
            await channel.open()
    finally:
        await channel.close()


async def test_it_reconnects_when_libvirtd_comes_back(
    restartable_libvirtd: RestartableLibvirtd,
) -> None:
    await asyncio.to_thread(restartable_libvirtd.start)
    uid = str(uuid.uuid4())
    async with opened(restartable_libvirtd.test_uri, timeout=5.0) as domains:
        await domains.define(domain_xml("before", uid))
        assert await domains.exists(uid)
        await asyncio.to_thread(restartable_libvirtd.stop)
        with pytest.raises(HostUnreachable):
            await domains.list()
        await asyncio.to_thread(restartable_libvirtd.start)
        # The next call opens a new connection by itself (a new daemon: a new test host).
        assert uid not in {v.uuid for v in await domains.list()}
        await domains.define(domain_xml("after", uid))
        # Gone again under a kept connection: the call is retried once, on a new one.
        await asyncio.to_thread(restartable_libvirtd.stop)
        await asyncio.to_thread(restartable_libvirtd.start)
        # (The test driver's default host has one domain of its own, "test".)
        assert [v.name for v in await domains.list()] == ["test"]
