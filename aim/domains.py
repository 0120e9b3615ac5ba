"""Domains: the host's facts, defining, listing and powering VMs.

Each method makes one trip to the libvirt pool: the lookup and the action run together
in a thread. Power operations are idempotent: asking for the state a domain is already in
succeeds, so the datacenter can retry a job whose answer it lost.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import libvirt

from aim.libvirt_host import LibvirtHost, fail, parse_uuid

# libvirt's virDomainState and the contract's DomainState share their numbers; spelt out
# so that a change on either side shows here.
_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: "UNKNOWN",
    libvirt.VIR_DOMAIN_RUNNING: "RUNNING",
    libvirt.VIR_DOMAIN_BLOCKED: "BLOCKED",
    libvirt.VIR_DOMAIN_PAUSED: "PAUSED",
    libvirt.VIR_DOMAIN_SHUTDOWN: "SHUTDOWN",
    libvirt.VIR_DOMAIN_SHUTOFF: "SHUTOFF",
    libvirt.VIR_DOMAIN_CRASHED: "CRASHED",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "PMSUSPENDED",
}

# Undefining also drops what libvirt keeps beside the definition, which would otherwise
# make it refuse (a managed save image, snapshot metadata).
_UNDEFINE_FLAGS = (
    libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
)


def _ensure(
    dom: libvirt.virDomain,
    reached: Callable[[libvirt.virDomain], bool],
    act: Callable[[], Any],
) -> None:
    """Do `act` unless the goal is reached, before or (a race) when libvirt refuses it."""
    if reached(dom):
        return
    try:
        act()
    except libvirt.libvirtError as err:
        if err.get_error_code() == libvirt.VIR_ERR_OPERATION_INVALID and reached(dom):
            return
        raise


def _needs_active(
    reached: Callable[[libvirt.virDomain], bool],
) -> Callable[[libvirt.virDomain], bool]:
    """`reached`, for an action that only a domain with a running process can take.

    Checked here rather than left to libvirt, whose drivers disagree on the error (qemu
    says "operation invalid", the test driver "internal error").
    """

    def check(d: libvirt.virDomain) -> bool:
        if not d.isActive():
            fail("LIBVIRT-STATE", f"domain {d.name()!r} is not running")
        return reached(d)

    return check


def _active(dom: libvirt.virDomain) -> bool:
    return bool(dom.isActive())


def _inactive(dom: libvirt.virDomain) -> bool:
    return not dom.isActive()


def _never(_dom: libvirt.virDomain) -> bool:
    return False


def _paused(dom: libvirt.virDomain) -> bool:
    return bool(dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED)


def _running(dom: libvirt.virDomain) -> bool:
    return bool(dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING)


class DomainGroup:
    METHODS = (
        "getNodeInfo",
        "defineDomain",
        "undefineDomain",
        "existDomain",
        "getDomainState",
        "getDomainInfo",
        "getDomains",
        "powerOn",
        "powerOff",
        "shutdown",
        "reset",
        "pause",
        "resume",
    )

    def __init__(self, *, contract: ModuleType, host: LibvirtHost) -> None:
        self._contract = contract
        self._host = host

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    # -- in the libvirt threads ------------------------------------------------------

    def _state(self, code: int) -> Any:
        return getattr(self._contract.DomainState, _STATES.get(code, "UNKNOWN"))

    def _info(self, dom: libvirt.virDomain) -> Any:
        state, max_kib, kib, vcpus, cpu_ns = dom.info()
        return self._contract.DomainInfo(
            uuid=dom.UUIDString(),
            name=dom.name(),
            state=self._state(state),
            maxMemoryBytes=max_kib * 1024,
            memoryBytes=kib * 1024,
            virtualCpus=vcpus,
            cpuTimeNs=cpu_ns,
            persistent=bool(dom.isPersistent()),
            autostart=bool(dom.autostart()),
        )

    def _node_info(self) -> Any:
        conn = self._host.conn
        model, memory_mib, cpus, mhz, nodes, sockets, cores, threads = conn.getInfo()
        return self._contract.NodeInfo(
            hostname=conn.getHostname(),
            hypervisorType=conn.getType(),
            hypervisorVersion=conn.getVersion(),
            libvirtVersion=conn.getLibVersion(),
            cpuModel=model,
            memoryBytes=memory_mib * 1024 * 1024,
            cpus=cpus,
            mhz=mhz,
            nodes=nodes,
            sockets=sockets,
            cores=cores,
            threads=threads,
            # Where the datacenter should take domain operations; empty: through us.
            remoteLibvirtUri=self._host.remote_uri,
        )

    def _on_domain(self, uuid: str, fn: Callable[[libvirt.virDomain], Any]) -> Any:
        return fn(self._host.conn.lookupByUUIDString(uuid))

    def _exists(self, uuid: str) -> bool:
        try:
            self._host.conn.lookupByUUIDString(uuid)
        except libvirt.libvirtError as err:
            if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return False
            raise
        return True

    async def _with(self, uuid: str, fn: Callable[[libvirt.virDomain], Any]) -> Any:
        return await self._host.call(self._on_domain, parse_uuid(uuid), fn)

    # -- the thrift methods ------------------------------------------------------------

    async def getNodeInfo(self) -> Any:
        return await self._host.call(self._node_info)

    async def defineDomain(self, xml: str) -> str:
        def define() -> str:
            return str(self._host.conn.defineXML(xml).UUIDString())

        return await self._host.call(define)

    async def undefineDomain(self, uuid: str) -> None:
        await self._with(uuid, lambda d: d.undefineFlags(_UNDEFINE_FLAGS))

    async def existDomain(self, uuid: str) -> bool:
        return await self._host.call(self._exists, parse_uuid(uuid))

    async def getDomainState(self, uuid: str) -> Any:
        return await self._with(uuid, lambda d: self._state(d.state()[0]))

    async def getDomainInfo(self, uuid: str) -> Any:
        return await self._with(uuid, self._info)

    async def getDomains(self) -> list[Any]:
        def domains() -> list[Any]:
            return [self._info(d) for d in self._host.conn.listAllDomains(0)]

        return await self._host.call(domains)

    async def powerOn(self, uuid: str) -> None:
        # A paused domain is on: powerOn leaves it paused (resume is another request).
        await self._with(uuid, lambda d: _ensure(d, _active, d.create))

    async def powerOff(self, uuid: str) -> None:
        await self._with(uuid, lambda d: _ensure(d, _inactive, d.destroy))

    async def shutdown(self, uuid: str) -> None:
        # Asks the guest (ACPI); it returns once asked, not once the guest is off.
        await self._with(uuid, lambda d: _ensure(d, _inactive, d.shutdown))

    async def reset(self, uuid: str) -> None:
        # No goal state to reach: a domain that is not running is LIBVIRT-STATE.
        await self._with(uuid, lambda d: _ensure(d, _needs_active(_never), lambda: d.reset(0)))

    async def pause(self, uuid: str) -> None:
        await self._with(uuid, lambda d: _ensure(d, _needs_active(_paused), d.suspend))

    async def resume(self, uuid: str) -> None:
        await self._with(uuid, lambda d: _ensure(d, _needs_active(_running), d.resume))
