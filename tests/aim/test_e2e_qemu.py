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

import pytest

from tests.aim.e2e_host import READY, Guest, Libvirtd
from tests.aim.e2e_host import private_libvirtd as private_libvirtd
from tests.aim.e2e_host import test_guest as test_guest

libvirt = pytest.importorskip("libvirt")

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
