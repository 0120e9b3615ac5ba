"""The end-to-end host works: a private libvirtd boots the test guest under QEMU (TCG).

A smoke test of the harness in e2e_host.py with libvirt-python alone (every libvirt call
in a thread, never on the loop), before tests drive the AIM through thrift against it.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import libvirt

from tests.aim.e2e_host import READY, Guest, Libvirtd
from tests.aim.e2e_host import private_libvirtd as private_libvirtd
from tests.aim.e2e_host import test_guest as test_guest

# Booting a kernel in software emulation on a loaded 2-core host: generous, yet the whole
# test stays well under a minute.
BOOT_TIMEOUT = 45.0


def domain_xml(name: str, guest: Guest, console: Path) -> str:
    return f"""
<domain type='qemu'>
  <name>{escape(name)}</name>
  <memory unit='MiB'>96</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{escape(str(guest.kernel))}</kernel>
    <initrd>{escape(str(guest.initrd))}</initrd>
    <cmdline>console=ttyS0 panic=-1 quiet</cmdline>
  </os>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <serial type='file'>
      <source path='{escape(str(console))}'/>
      <target port='0'/>
    </serial>
    <memballoon model='none'/>
  </devices>
</domain>
"""


async def wait_for_console(console: Path, text: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        seen = await asyncio.to_thread(
            lambda: console.read_text(errors="replace") if console.exists() else ""
        )
        if text in seen:
            return seen
        await asyncio.sleep(0.5)
    raise AssertionError(
        f"{text!r} not on the console in {timeout:.0f} s; it shows: {seen[-1500:]}"
    )


async def test_boot_a_guest(test_guest: Guest, private_libvirtd: Libvirtd) -> None:
    started = time.monotonic()
    conn: Any = await asyncio.to_thread(libvirt.open, private_libvirtd.uri)
    name = f"abiquo-e2e-{secrets.token_hex(4)}"
    console = private_libvirtd.dir / f"{name}.console"
    domain: Any = None
    try:
        domain = await asyncio.to_thread(conn.defineXML, domain_xml(name, test_guest, console))
        await asyncio.to_thread(domain.create)
        state, _reason = await asyncio.to_thread(domain.state)
        assert state == libvirt.VIR_DOMAIN_RUNNING
        # Running is QEMU started; the line from /init is the kernel booted to userland.
        await wait_for_console(console, READY, BOOT_TIMEOUT)
        state, _reason = await asyncio.to_thread(domain.state)
        assert state == libvirt.VIR_DOMAIN_RUNNING

        await asyncio.to_thread(domain.destroy)
        state, _reason = await asyncio.to_thread(domain.state)
        assert state == libvirt.VIR_DOMAIN_SHUTOFF
        await asyncio.to_thread(domain.undefine)
        domain = None
        names = await asyncio.to_thread(conn.listDefinedDomains)
        assert name not in names
    finally:
        if domain is not None:
            await asyncio.to_thread(_destroy_quietly, domain)
        await asyncio.to_thread(conn.close)
    assert time.monotonic() - started < 60


def _destroy_quietly(domain: Any) -> None:
    for step in (domain.destroy, domain.undefine):
        with contextlib.suppress(libvirt.libvirtError):
            step()


async def collect_events(
    aim: Any, contract: Any, uuid: str, cursor: int, until: int, timeout: float = 30.0
) -> tuple[list[int], int]:
    """Long-poll the AIM from `cursor` until the event type `until` arrives for `uuid`."""
    types: list[int] = []
    deadline = time.monotonic() + timeout
    while until not in types:
        assert time.monotonic() < deadline, f"no {until} in {timeout:.0f} s; got {types}"
        batch = await aim.waitEvents(cursor, 100, 5_000)
        assert not batch.resync
        types += [e.type for e in batch.events if e.domainUuid == uuid]
        cursor = batch.cursor
    return types, cursor


async def test_the_aim_drives_a_real_guest(
    contract: Any, test_guest: Guest, private_libvirtd: Libvirtd
) -> None:
    from aim.domains import DomainGroup
    from aim.events import EventGroup
    from aim.libvirt_host import LibvirtHost
    from tests.aim.conftest import serving

    host = LibvirtHost(private_libvirtd.uri, threads=4, call_timeout=60)
    groups = [
        host,
        DomainGroup(contract=contract, host=host),
        EventGroup(contract=contract, host=host, history=100),
    ]
    name = f"abiquo-aim-e2e-{secrets.token_hex(4)}"
    console = private_libvirtd.dir / f"{name}.console"
    events = contract.EventType
    async with serving(contract, groups) as aim:
        uuid = await aim.defineDomain(domain_xml(name, test_guest, console))
        try:
            await aim.powerOn(uuid)
            assert await aim.getDomainState(uuid) == contract.DomainState.RUNNING
            await wait_for_console(console, READY, BOOT_TIMEOUT)
            seen, cursor = await collect_events(aim, contract, uuid, 0, events.POWER_ON)
            assert seen == [events.CREATED, events.POWER_ON]

            await aim.powerOff(uuid)
            assert await aim.getDomainState(uuid) == contract.DomainState.SHUTOFF
            seen, _ = await collect_events(aim, contract, uuid, cursor, events.POWER_OFF)
            assert seen == [events.POWER_OFF]

            # A monitor that lost its connection resumes from an older cursor: nothing lost.
            replay = await aim.waitEvents(0, 100, 0)
            assert not replay.resync
            assert [e.type for e in replay.events if e.domainUuid == uuid] == [
                events.CREATED,
                events.POWER_ON,
                events.POWER_OFF,
            ]
        finally:
            await aim.powerOff(uuid)
            await aim.undefineDomain(uuid)
        assert not await aim.existDomain(uuid)
