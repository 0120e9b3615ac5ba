"""The VLAN group through a real thrift client, on real interfaces in a private netns.

Each test makes its own network namespace with a parent interface `eth0` in it (a dummy
interface, or one end of a veth pair when the kernel has no dummy driver) and gives the
group `netns=` so that every `ip` it runs lands there, never on the host's interfaces.

The tests that need 802.1Q interfaces take `on_a_vlan_kernel` and hand it their body. On
a kernel that makes them (tried once, in a scratch namespace) the body runs here. On one
that cannot (no 8021q, and no modules to load, as on a Firecracker guest's kernel) these
tests all run once, together, in one boot of a guest whose kernel can (vlan_guest.py:
User-mode Linux, or QEMU where UML cannot run); each then passes or fails here as it did
there, with the report from there. The tests of a kernel without 8021q run only on such
a kernel.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pytest

from aim.settings import AimSettings
from aim.vlan import VlanGroup
from tests.aim import vlan_guest
from tests.aim.conftest import serving


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


# -- the kernel, and where the tests that need 802.1Q run -----------------------------------


@dataclass(frozen=True)
class Kernel:
    # Whether this kernel makes 802.1Q interfaces.
    vlans: bool


def _makes_vlans() -> bool:
    """Ask the kernel by doing it: a bridge and a VLAN on it, in a scratch namespace."""

    def ip_sync(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", *args], capture_output=True, text=True, timeout=30, check=False
        )

    ns = f"abiquo-k-{secrets.token_hex(4)}"
    made = ip_sync("netns", "add", ns)
    if made.returncode != 0:
        vlan_guest.missing(f"ip netns add does not work here: {made.stderr.strip()}")
    try:
        ip_sync("-n", ns, "link", "add", "name", "probebr", "type", "bridge")
        vlan = ip_sync(
            "-n", ns, "link", "add", "link", "probebr", "name", "probebr.2",
            "type", "vlan", "id", "2",
        )  # fmt: skip
        return vlan.returncode == 0
    finally:
        ip_sync("netns", "del", ns)


@pytest.fixture(scope="module")
def kernel() -> Kernel:
    # Synchronous, like the fixtures below that may start the guest: pytest runs them
    # outside the test's event loop, so their blocking calls cannot stall it.
    if os.geteuid() != 0 or shutil.which("ip") is None:
        vlan_guest.missing("the VLAN tests need root and iproute2's ip")
    vlans = _makes_vlans()
    if not vlans and vlan_guest.inside():
        pytest.fail("the guest's kernel cannot make 802.1Q interfaces either", pytrace=False)
    return Kernel(vlans=vlans)


@pytest.fixture(scope="module")
def guest_run(request: pytest.FixtureRequest) -> vlan_guest.GuestRun:
    """One guest run of every test of this module that takes `on_a_vlan_kernel`."""
    wanted = [
        item.nodeid
        for item in request.session.items
        if getattr(item, "module", None) is request.module
        and "on_a_vlan_kernel" in getattr(item, "fixturenames", ())
    ]
    return vlan_guest.run_tests(wanted, request.config.rootpath)


@dataclass
class Host:
    ns: str
    client: Any


@contextlib.asynccontextmanager
async def a_host(contract: ModuleType) -> AsyncIterator[Host]:
    ns = f"abiquo-t-{secrets.token_hex(4)}"
    code, _, err = await ip("netns", "add", ns)
    if code != 0:
        vlan_guest.missing(f"ip netns add does not work here: {err}")
    try:
        code, _, _ = await ip("-n", ns, "link", "add", "eth0", "type", "dummy")
        if code != 0:
            # No CONFIG_DUMMY (as on some VM kernels): a veth end is as good a parent.
            await must("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p")
        await must("-n", ns, "link", "set", "eth0", "up")
        group = VlanGroup(contract=contract, settings=AimSettings(), netns=ns)
        async with serving(contract, [group]) as client:
            yield Host(ns=ns, client=client)
    finally:
        await ip("netns", "del", ns)


@pytest.fixture
async def host(kernel: Kernel, contract: ModuleType) -> AsyncIterator[Host]:
    """A namespace and a served VlanGroup on this kernel, whatever it can do."""
    async with a_host(contract) as made:
        yield made


Body = Callable[[Host], Awaitable[None]]
OnAVlanKernel = Callable[[Body], Awaitable[None]]


@pytest.fixture
def on_a_vlan_kernel(
    request: pytest.FixtureRequest, kernel: Kernel, contract: ModuleType
) -> OnAVlanKernel:
    """Runs a test's body on a Host of a kernel that makes 802.1Q interfaces.

    On this kernel if it can. Otherwise the body ran in the guest (the first such test
    starts it for all of them): this test then takes the outcome it had there.
    """
    if kernel.vlans:

        async def here(body: Body) -> None:
            async with a_host(contract) as made:
                await body(made)

        return here

    run: vlan_guest.GuestRun = request.getfixturevalue("guest_run")

    async def there(body: Body) -> None:
        # This very test ran there, body and all: its outcome there is the one here.
        run.check(request.node.nodeid)

    return there


# -- on a kernel that makes 802.1Q interfaces ------------------------------------------------


async def test_create_then_delete(on_a_vlan_kernel: OnAVlanKernel) -> None:
    async def body(host: Host) -> None:
        await host.client.createVLAN(42, "eth0", "abiquo_42")
        found = await links(host.ns)
        vlan, bridge = found["eth0.42"], found["abiquo_42"]
        assert vlan["linkinfo"]["info_kind"] == "vlan"
        assert vlan["linkinfo"]["info_data"]["protocol"] == "802.1Q"
        assert vlan["linkinfo"]["info_data"]["id"] == 42
        assert vlan["link"] == "eth0"
        assert vlan["master"] == "abiquo_42"
        assert bridge["linkinfo"]["info_kind"] == "bridge"
        assert "UP" in vlan["flags"] and "UP" in bridge["flags"]

        # Twice: nothing to do, no error, still one of each.
        await host.client.createVLAN(42, "eth0", "abiquo_42")
        again = await links(host.ns)
        assert {"eth0.42", "abiquo_42"} <= set(again)
        assert again["eth0.42"]["ifindex"] == vlan["ifindex"]
        assert again["abiquo_42"]["ifindex"] == bridge["ifindex"]
        assert [name for name in again if name.startswith("eth0.")] == ["eth0.42"]

        await host.client.deleteVLAN(42, "eth0", "abiquo_42")
        after = await links(host.ns)
        assert "eth0.42" not in after and "abiquo_42" not in after
        assert "eth0" in after
        # Absent: deleting it again succeeds and changes nothing.
        await host.client.deleteVLAN(42, "eth0", "abiquo_42")
        assert set(await links(host.ns)) == set(after)

    await on_a_vlan_kernel(body)


async def test_two_vlans_on_one_parent(on_a_vlan_kernel: OnAVlanKernel) -> None:
    async def body(host: Host) -> None:
        await host.client.createVLAN(1, "eth0", "abiquo_1")
        await host.client.createVLAN(4094, "eth0", "abiquo_4094")
        found = await links(host.ns)
        assert found["eth0.1"]["linkinfo"]["info_data"]["id"] == 1
        assert found["eth0.4094"]["linkinfo"]["info_data"]["id"] == 4094
        assert found["eth0.1"]["master"] == "abiquo_1"
        assert found["eth0.4094"]["master"] == "abiquo_4094"

        # Deleting one leaves the other as it was.
        await host.client.deleteVLAN(1, "eth0", "abiquo_1")
        after = await links(host.ns)
        assert "eth0.1" not in after and "abiquo_1" not in after
        assert after["eth0.4094"]["master"] == "abiquo_4094"

    await on_a_vlan_kernel(body)


async def test_create_repairs_a_half_made_vlan(on_a_vlan_kernel: OnAVlanKernel) -> None:
    async def body(host: Host) -> None:
        # The bridge exists (a crash between two steps): create completes the rest.
        await must("-n", host.ns, "link", "add", "name", "abiquo_7", "type", "bridge")
        await host.client.createVLAN(7, "eth0", "abiquo_7")
        found = await links(host.ns)
        assert found["eth0.7"]["master"] == "abiquo_7"
        assert "UP" in found["abiquo_7"]["flags"]

    await on_a_vlan_kernel(body)


async def test_delete_completes_a_half_deleted_vlan(on_a_vlan_kernel: OnAVlanKernel) -> None:
    async def body(host: Host) -> None:
        # The VLAN interface is left, its bridge gone: delete removes what is left.
        await must(
            "-n", host.ns, "link", "add", "link", "eth0", "name", "eth0.9",
            "type", "vlan", "id", "9",
        )  # fmt: skip
        await host.client.deleteVLAN(9, "eth0", "abiquo_9")
        assert "eth0.9" not in await links(host.ns)

    await on_a_vlan_kernel(body)


async def test_a_vlan_of_another_tag_is_left_alone(
    on_a_vlan_kernel: OnAVlanKernel, contract: ModuleType
) -> None:
    async def body(host: Host) -> None:
        # "eth0.42" exists but carries tag 43 (made by hand): not the AIM's VLAN 42.
        await must(
            "-n", host.ns, "link", "add", "link", "eth0", "name", "eth0.42",
            "type", "vlan", "id", "43",
        )  # fmt: skip
        for method in (host.client.createVLAN, host.client.deleteVLAN):
            with pytest.raises(contract.VLANException) as caught:
                await method(42, "eth0", "abiquo_42")
            assert caught.value.code == "VLAN-FAILED"
            assert "eth0.42" in caught.value.message
        found = await links(host.ns)
        assert found["eth0.42"]["linkinfo"]["info_data"]["id"] == 43
        assert "abiquo_42" not in found

    await on_a_vlan_kernel(body)


async def test_bad_tags_make_nothing(on_a_vlan_kernel: OnAVlanKernel, contract: ModuleType) -> None:
    async def body(host: Host) -> None:
        # On a kernel that would make them: 0 and 4095 are reserved, 5000 is past 12 bits.
        for tag in (0, 4095, 5000, -1):
            for method in (host.client.createVLAN, host.client.deleteVLAN):
                with pytest.raises(contract.VLANException) as caught:
                    await method(tag, "eth0", f"abiquo_{tag}")
                assert caught.value.code == "VLAN-INVALID", caught.value.message
                assert str(tag) in caught.value.message
        assert set(await links(host.ns)) <= {"lo", "eth0", "eth0p"}

    await on_a_vlan_kernel(body)


async def test_check_configuration(on_a_vlan_kernel: OnAVlanKernel) -> None:
    async def body(host: Host) -> None:
        await host.client.checkVLANConfiguration()
        # The probe's scratch namespace is gone.
        assert "abiquo-probe-" not in await must("netns", "list")

    await on_a_vlan_kernel(body)


# -- on a kernel without 8021q -----------------------------------------------------------------


def without_8021q(kernel: Kernel) -> None:
    if kernel.vlans:
        pytest.skip("this kernel makes 802.1Q interfaces")


async def test_without_8021q_create_reports_ips_error(
    kernel: Kernel, host: Host, contract: ModuleType
) -> None:
    without_8021q(kernel)
    with pytest.raises(contract.VLANException) as caught:
        await host.client.createVLAN(42, "eth0", "abiquo_42")
    assert caught.value.code == "VLAN-FAILED"
    assert "type vlan" in caught.value.message
    # The VLAN is made first: its failure leaves no bridge behind.
    assert "abiquo_42" not in await links(host.ns)


async def test_without_8021q_check_configuration_fails(
    kernel: Kernel, host: Host, contract: ModuleType
) -> None:
    without_8021q(kernel)
    with pytest.raises(contract.VLANException) as caught:
        await host.client.checkVLANConfiguration()
    assert caught.value.code == "VLAN-FAILED"
    assert "802.1Q" in caught.value.message
    assert "abiquo-probe-" not in await must("netns", "list")


# -- on any kernel: what is refused before any 802.1Q interface is made ---------------------


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
