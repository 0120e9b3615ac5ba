"""createVLAN, deleteVLAN, checkVLANConfiguration: 802.1Q interfaces and their bridges.

A VLAN of Abiquo on a host is an 802.1Q interface `<parent>.<tag>` on the physical
interface that carries the tagged traffic, enslaved to a Linux bridge that the VMs' taps
join. Everything is done with iproute2's `ip` (run as a child process, never blocking the
loop) and read back from `ip -j -d link show`, so an operation finds out what exists
rather than assuming: creating what exists and deleting what is absent both succeed.

Error codes (VLANException.code):
- VLAN-INVALID: a tag outside 1-4094, an interface name Linux (or this agent) refuses,
  or a bridge whose name does not start with `network.bridge_prefix`.
- VLAN-NO-PARENT: the parent interface does not exist.
- VLAN-FAILED: `ip` failed (its standard error is in the message), a name is taken by
  an interface of another kind, a bridge still has other ports, or the host cannot do
  802.1Q.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
from types import ModuleType
from typing import Any, NoReturn

from aim import commands
from aim.groups import raise_
from aim.settings import AimSettings

MIN_TAG = 1
# 0 and 4095 are reserved by 802.1Q.
MAX_TAG = 4094
# Linux's IFNAMSIZ is 16 with the terminating NUL.
MAX_NAME = 15
# Linux refuses "/", ":" and whitespace in a name (and "." and ".."). Only printable ASCII
# is accepted besides: these names go on the command line of `ip` and into libvirt XML. A
# leading "-" is refused too, as `ip` would read such an argument as an option.
_NAME = re.compile(r"[!-~]{1,15}")
_FORBIDDEN = set("/:")
# How long one `ip` may take before the host is deemed hung.
IP_TIMEOUT = 30.0


class IpError(Exception):
    def __init__(self, args: tuple[str, ...], returncode: int, stderr: str) -> None:
        super().__init__(f"ip {' '.join(args)}: {stderr or f'exit status {returncode}'}")
        self.stderr = stderr


class VlanGroup:
    METHODS = ("createVLAN", "deleteVLAN", "checkVLANConfiguration")

    def __init__(
        self, *, contract: ModuleType, settings: AimSettings, netns: str | None = None
    ) -> None:
        """`netns`: run every `ip` in that network namespace (`ip -n`), as the tests do."""
        self._contract = contract
        self._prefix = settings.network.bridge_prefix
        self._netns = netns
        # One change at a time: a read-then-create of two concurrent calls for the same
        # VLAN would otherwise race to "File exists".
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    # -- thrift methods -------------------------------------------------------------------

    async def createVLAN(self, vlanTag: int, vlanInterface: str, bridgeInterface: str) -> None:
        vlan = self._validate(vlanTag, vlanInterface, bridgeInterface)
        async with self._lock:
            links = await self._links()
            if vlanInterface not in links:
                self._fail("VLAN-NO-PARENT", f"the parent interface {vlanInterface} does not exist")
            existing = links.get(vlan)
            if existing is None:
                await self._run_or_fail(
                    "link", "add", "link", vlanInterface, "name", vlan,
                    "type", "vlan", "id", str(vlanTag),
                )  # fmt: skip
            elif not _is_vlan(existing, vlanInterface, vlanTag):
                self._fail(
                    "VLAN-FAILED",
                    f"{vlan} exists and is not the 802.1Q interface of tag {vlanTag} "
                    f"on {vlanInterface}",
                )
            bridge = links.get(bridgeInterface)
            if bridge is None:
                await self._run_or_fail("link", "add", "name", bridgeInterface, "type", "bridge")
            elif _kind(bridge) != "bridge":
                self._fail("VLAN-FAILED", f"{bridgeInterface} exists and is not a bridge")
            # Each of these is a no-op when already so, which keeps the call idempotent.
            await self._run_or_fail("link", "set", "dev", vlan, "master", bridgeInterface)
            await self._run_or_fail("link", "set", "dev", vlan, "up")
            await self._run_or_fail("link", "set", "dev", bridgeInterface, "up")

    async def deleteVLAN(self, vlanTag: int, vlanInterface: str, bridgeInterface: str) -> None:
        vlan = self._validate(vlanTag, vlanInterface, bridgeInterface)
        async with self._lock:
            links = await self._links()
            existing = links.get(vlan)
            if existing is not None and not _is_vlan(existing, vlanInterface, vlanTag):
                # Same name, something else: not ours to remove.
                self._fail(
                    "VLAN-FAILED",
                    f"{vlan} is not the 802.1Q interface of tag {vlanTag} on {vlanInterface}",
                )
            bridge = links.get(bridgeInterface)
            if bridge is not None:
                if _kind(bridge) != "bridge":
                    self._fail("VLAN-FAILED", f"{bridgeInterface} is not a bridge")
                # Removing a bridge detaches whatever is on it: while a VM's tap still is,
                # the VLAN is in use and nothing is changed (checked before any change).
                others = sorted(
                    name
                    for name, link in links.items()
                    if link.get("master") == bridgeInterface and name != vlan
                )
                if others:
                    self._fail(
                        "VLAN-FAILED",
                        f"the bridge {bridgeInterface} still has ports: {', '.join(others)}",
                    )
            if existing is not None:
                await self._run_or_fail("link", "del", "dev", vlan, absent_ok=True)
            if bridge is not None:
                await self._run_or_fail("link", "del", "dev", bridgeInterface, absent_ok=True)

    async def checkVLANConfiguration(self) -> None:
        """`ip` works and the kernel makes 802.1Q interfaces.

        The kernel is asked by doing it: a bridge and a VLAN on it are made in a scratch
        network namespace, then the namespace is removed. /sys/module/8021q only shows a
        loaded module (not a loadable or, always, a built-in one) and `modprobe -n` only
        says a file exists; the probe exercises exactly what createVLAN does (the kernel
        loads 8021q on demand) without touching the host's own interfaces.
        """
        try:
            await self._ip("-V", netns=None)
        except IpError as exc:
            self._fail("VLAN-FAILED", f"ip is not usable: {exc}")
        scratch = f"abiquo-probe-{secrets.token_hex(4)}"
        try:
            await self._ip("netns", "add", scratch, netns=None)
        except IpError as exc:
            self._fail("VLAN-FAILED", f"cannot make a scratch network namespace: {exc.stderr}")
        try:
            await self._ip("link", "add", "name", "probebr", "type", "bridge", netns=scratch)
            await self._ip(
                "link", "add", "link", "probebr", "name", "probebr.2",
                "type", "vlan", "id", "2", netns=scratch,
            )  # fmt: skip
        except IpError as exc:
            self._fail("VLAN-FAILED", f"the kernel cannot make 802.1Q interfaces: {exc.stderr}")
        finally:
            # A failure here is reported by the probe's own error, or a harmless leftover.
            with contextlib.suppress(IpError):
                await self._ip("netns", "del", scratch, netns=None)

    # -- helpers ---------------------------------------------------------------------------

    def _fail(self, code: str, message: str) -> NoReturn:
        raise_(self._contract.VLANException, code, message)

    def _validate(self, tag: int, parent: str, bridge: str) -> str:
        if not isinstance(tag, int) or isinstance(tag, bool) or not MIN_TAG <= tag <= MAX_TAG:
            self._fail("VLAN-INVALID", f"the VLAN tag must be {MIN_TAG}-{MAX_TAG}, not {tag!r}")
        for what, name in (("interface", parent), ("bridge", bridge)):
            if not _valid_name(name):
                self._fail("VLAN-INVALID", f"{name!r} is not a valid {what} name")
        vlan = f"{parent}.{tag}"
        if len(vlan) > MAX_NAME:
            self._fail("VLAN-INVALID", f"the VLAN interface name {vlan} is over {MAX_NAME} chars")
        if not bridge.startswith(self._prefix) or bridge == self._prefix:
            # The AIM manages only its own bridges (network.bridge_prefix), never the
            # host's: enslaving a VLAN into, or deleting, the host's bridge would cut it off.
            self._fail("VLAN-INVALID", f"the bridge {bridge} is not named {self._prefix}...")
        if bridge in (parent, vlan):
            self._fail("VLAN-INVALID", f"the bridge {bridge} cannot be the VLAN or its parent")
        return vlan

    async def _links(self) -> dict[str, dict[str, Any]]:
        out = await self._run_or_fail("-j", "-d", "link", "show")
        try:
            parsed = json.loads(out or "[]")
        except ValueError as exc:
            self._fail("VLAN-FAILED", f"cannot read `ip -j link show`: {exc}")
        return {link["ifname"]: link for link in parsed if isinstance(link, dict)}

    async def _run_or_fail(self, *args: str, absent_ok: bool = False) -> str:
        try:
            return await self._ip(*args, netns=self._netns)
        except IpError as exc:
            if absent_ok and "Cannot find device" in exc.stderr:
                return ""  # gone meanwhile: deleting what is absent succeeds
            if "Cannot find device" in exc.stderr and args[:2] == ("link", "add"):
                self._fail("VLAN-NO-PARENT", str(exc))
            self._fail("VLAN-FAILED", str(exc))

    async def _ip(self, *args: str, netns: str | None) -> str:
        argv = ["ip", *(("-n", netns) if netns else ()), *args]
        try:
            done = await commands.run(argv, timeout=IP_TIMEOUT)
        except commands.CommandError as exc:
            raise IpError(tuple(argv[1:]), -1, str(exc)) from exc
        if done.returncode != 0:
            raise IpError(tuple(argv[1:]), done.returncode, done.stderr)
        return done.stdout


def _valid_name(name: object) -> bool:
    return (
        isinstance(name, str)
        and _NAME.fullmatch(name) is not None
        and not _FORBIDDEN.intersection(name)
        and name not in (".", "..")
        and not name.startswith("-")
    )


def _kind(link: dict[str, Any]) -> str | None:
    kind = link.get("linkinfo", {}).get("info_kind")
    return kind if isinstance(kind, str) else None


def _is_vlan(link: dict[str, Any], parent: str, tag: int) -> bool:
    data = link.get("linkinfo", {}).get("info_data", {})
    return _kind(link) == "vlan" and link.get("link") == parent and data.get("id") == tag


class SimulatedVlanGroup(VlanGroup):
    """The VLAN methods of a host whose domains are not real (`[network]
    simulated_vlans`): each request is checked as VlanGroup checks it and remembered as
    (tag, parent interface, bridge); no interface of the machine is touched, which is
    what a demo host on a laptop or a test on a kernel without 8021q needs."""

    def __init__(self, *, contract: ModuleType, settings: AimSettings) -> None:
        super().__init__(contract=contract, settings=settings)
        # What exists now, and every creation asked for, in order.
        self.current: set[tuple[int, str, str]] = set()
        self.created: list[tuple[int, str, str]] = []

    async def createVLAN(self, vlanTag: int, vlanInterface: str, bridgeInterface: str) -> None:
        self._validate(vlanTag, vlanInterface, bridgeInterface)
        self.current.add((vlanTag, vlanInterface, bridgeInterface))
        self.created.append((vlanTag, vlanInterface, bridgeInterface))

    async def deleteVLAN(self, vlanTag: int, vlanInterface: str, bridgeInterface: str) -> None:
        self._validate(vlanTag, vlanInterface, bridgeInterface)
        self.current.discard((vlanTag, vlanInterface, bridgeInterface))

    async def checkVLANConfiguration(self) -> None:
        pass
