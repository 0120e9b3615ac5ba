"""The VLAN group through a real thrift client, on real interfaces in a private netns.

Each test makes its own network namespace with a parent interface `eth0` in it (a dummy
interface, or one end of a veth pair when the kernel has no dummy driver) and gives the
group `netns=` so that every `ip` it runs lands there, never on the host's interfaces.
Where the kernel cannot make 802.1Q interfaces (no 8021q), the tests that need one are
skipped and a test shows that createVLAN then reports ip's own error instead.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pytest

from aim.settings import AimSettings
from aim.vlan import VlanGroup
from tests.aim.conftest import serving

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2's ip"
)


async def ip(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        "ip", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode().strip()


async def must(*args: str) -> str:
    code, out, err = await ip(*args)
    assert code == 0, f"ip {' '.join(args)}: {err}"
    return out


async def links(ns: str) -> dict[str, dict[str, Any]]:
    parsed = json.loads(await must("-n", ns, "-j", "-d", "link", "show"))
    return {link["ifname"]: link for link in parsed}


@dataclass
class Host:
    ns: str
    client: Any
    # Whether this kernel makes 802.1Q interfaces (found by trying, in the namespace).
    vlans: bool


@pytest.fixture
async def host(contract: ModuleType) -> AsyncIterator[Host]:
    ns = f"abiquo-t-{secrets.token_hex(4)}"
    code, _, err = await ip("netns", "add", ns)
    if code != 0:
        pytest.skip(f"ip netns add does not work here: {err}")
    try:
        code, _, _ = await ip("-n", ns, "link", "add", "eth0", "type", "dummy")
        if code != 0:
            # No CONFIG_DUMMY (as on some VM kernels): a veth end is as good a parent.
            await must("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p")
        await must("-n", ns, "link", "set", "eth0", "up")
        code, _, _ = await ip(
            "-n", ns, "link", "add", "link", "eth0", "name", "probe.9", "type", "vlan", "id", "9"
        )
        if code == 0:
            await must("-n", ns, "link", "del", "probe.9")
        group = VlanGroup(contract=contract, settings=AimSettings(), netns=ns)
        async with serving(contract, [group]) as client:
            yield Host(ns=ns, client=client, vlans=code == 0)
    finally:
        await ip("netns", "del", ns)


def needs_vlans(host: Host) -> None:
    if not host.vlans:
        pytest.skip("this kernel cannot make 802.1Q interfaces (no 8021q)")


async def test_create_then_delete(host: Host) -> None:
    needs_vlans(host)
    await host.client.createVLAN(42, "eth0", "abiquo_42")
    found = await links(host.ns)
    vlan, bridge = found["eth0.42"], found["abiquo_42"]
    assert vlan["linkinfo"]["info_kind"] == "vlan"
    assert vlan["linkinfo"]["info_data"]["id"] == 42
    assert vlan["link"] == "eth0"
    assert vlan["master"] == "abiquo_42"
    assert bridge["linkinfo"]["info_kind"] == "bridge"
    assert "UP" in vlan["flags"] and "UP" in bridge["flags"]

    # Twice: nothing to do, no error, still one of each.
    await host.client.createVLAN(42, "eth0", "abiquo_42")
    assert {"eth0.42", "abiquo_42"} <= set(await links(host.ns))

    await host.client.deleteVLAN(42, "eth0", "abiquo_42")
    after = await links(host.ns)
    assert "eth0.42" not in after and "abiquo_42" not in after
    assert "eth0" in after
    await host.client.deleteVLAN(42, "eth0", "abiquo_42")


async def test_create_repairs_a_half_made_vlan(host: Host) -> None:
    needs_vlans(host)
    # The bridge exists (a crash between two steps): create completes the rest.
    await must("-n", host.ns, "link", "add", "name", "abiquo_7", "type", "bridge")
    await host.client.createVLAN(7, "eth0", "abiquo_7")
    found = await links(host.ns)
    assert found["eth0.7"]["master"] == "abiquo_7"
    assert "UP" in found["abiquo_7"]["flags"]


async def test_without_8021q_create_reports_ips_error(host: Host, contract: ModuleType) -> None:
    if host.vlans:
        pytest.skip("this kernel makes 802.1Q interfaces")
    with pytest.raises(contract.VLANException) as caught:
        await host.client.createVLAN(42, "eth0", "abiquo_42")
    assert caught.value.code == "VLAN-FAILED"
    assert "type vlan" in caught.value.message
    # The VLAN is made first: its failure leaves no bridge behind.
    assert "abiquo_42" not in await links(host.ns)


async def test_check_configuration(host: Host, contract: ModuleType) -> None:
    if host.vlans:
        await host.client.checkVLANConfiguration()
    else:
        with pytest.raises(contract.VLANException) as caught:
            await host.client.checkVLANConfiguration()
        assert caught.value.code == "VLAN-FAILED"
        assert "802.1Q" in caught.value.message
    # The probe's scratch namespace is gone.
    out = await must("netns", "list")
    assert "abiquo-probe-" not in out


@pytest.mark.parametrize(
    ("tag", "parent", "bridge"),
    [
        (0, "eth0", "abiquo_1"),
        (5000, "eth0", "abiquo_1"),
        (4095, "eth0", "abiquo_1"),
        (-1, "eth0", "abiquo_1"),
        (10, "", "abiquo_1"),
        (10, "eth/0", "abiquo_1"),
        (10, "eth 0", "abiquo_1"),
        (10, "eth:0", "abiquo_1"),
        (10, "eth\t0", "abiquo_1"),
        (10, "ethé", "abiquo_1"),
        (10, "-j", "abiquo_1"),
        (10, ".", "abiquo_1"),
        (10, "x" * 16, "abiquo_1"),
        (1000, "x" * 12, "abiquo_1"),  # x*12 + ".1000" is over 15 characters
        (10, "eth0", "abiquo_" + "x" * 9),
        (10, "eth0", "abiquo bad"),
        (10, "eth0", "br0"),  # not the AIM's: no bridge_prefix
        (10, "eth0", "abiquo_"),
    ],
)
async def test_invalid_arguments(
    host: Host, contract: ModuleType, tag: int, parent: str, bridge: str
) -> None:
    for method in (host.client.createVLAN, host.client.deleteVLAN):
        with pytest.raises(contract.VLANException) as caught:
            await method(tag, parent, bridge)
        assert caught.value.code == "VLAN-INVALID", caught.value.message
    # Nothing was touched, and the server keeps serving.
    assert set(await links(host.ns)) <= {"lo", "eth0", "eth0p"}
    await host.client.deleteVLAN(10, "eth0", "abiquo_10")


async def test_missing_parent(host: Host, contract: ModuleType) -> None:
    with pytest.raises(contract.VLANException) as caught:
        await host.client.createVLAN(10, "eth9", "abiquo_10")
    assert caught.value.code == "VLAN-NO-PARENT"
    assert "eth9" in caught.value.message
    assert "abiquo_10" not in await links(host.ns)
    await host.client.deleteVLAN(10, "eth9", "abiquo_10")  # absent: succeeds


async def test_delete_removes_a_lone_bridge(host: Host) -> None:
    await must("-n", host.ns, "link", "add", "name", "abiquo_5", "type", "bridge")
    await host.client.deleteVLAN(5, "eth0", "abiquo_5")
    assert "abiquo_5" not in await links(host.ns)
    await host.client.deleteVLAN(5, "eth0", "abiquo_5")


async def test_delete_keeps_a_bridge_in_use(host: Host, contract: ModuleType) -> None:
    # A VM's tap (here a veth end) still on the bridge: nothing is removed.
    await must("-n", host.ns, "link", "add", "name", "abiquo_6", "type", "bridge")
    await must("-n", host.ns, "link", "add", "vm1", "type", "veth", "peer", "name", "vm1p")
    await must("-n", host.ns, "link", "set", "vm1", "master", "abiquo_6")
    with pytest.raises(contract.VLANException) as caught:
        await host.client.deleteVLAN(6, "eth0", "abiquo_6")
    assert caught.value.code == "VLAN-FAILED"
    assert "vm1" in caught.value.message
    assert "abiquo_6" in await links(host.ns)


async def test_name_taken_by_another_kind(host: Host, contract: ModuleType) -> None:
    # "abiquo_8" is a veth, not a bridge: neither created over nor deleted.
    await must("-n", host.ns, "link", "add", "abiquo_8", "type", "veth", "peer", "name", "p8")
    with pytest.raises(contract.VLANException) as caught:
        await host.client.deleteVLAN(8, "eth0", "abiquo_8")
    assert caught.value.code == "VLAN-FAILED"
    assert "abiquo_8" in await links(host.ns)
