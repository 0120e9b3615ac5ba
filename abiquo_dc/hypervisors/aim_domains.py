"""Domain operations through the host's AIM: its thrift methods over libvirt.

The channel for hosts whose libvirt the datacenter cannot or should not open itself:
the AIM reports no remote URI (its libvirtd does not listen, or a firewall is in the
way), or its libvirt state lives in the AIM's own connection and cannot be shared (the
all-in-one's demo host: libvirt's test driver on a file). The AIM's power methods are
idempotent the way DomainChannel asks, and its errors are translated by the AimClient.
"""

from __future__ import annotations

from typing import Any

from abiquo_dc.hypervisors.aim_client import AimClient
from abiquo_dc.hypervisors.base import PowerState, VmInfo
from abiquo_dc.hypervisors.domain_channel import DomainChannel, MiB

# The contract's DomainState names.
_POWER = {
    "RUNNING": PowerState.ON,
    "BLOCKED": PowerState.ON,
    "SHUTDOWN": PowerState.ON,  # shutting down: still on until libvirt says SHUTOFF
    "PAUSED": PowerState.PAUSED,
    "PMSUSPENDED": PowerState.PAUSED,
    "SHUTOFF": PowerState.OFF,
    "CRASHED": PowerState.OFF,
}


class AimDomains(DomainChannel):
    kind = "aim"

    def __init__(self, aim: AimClient) -> None:
        """`aim`: the driver's client, opened and closed by the driver."""
        self._aim = aim
        self._states: dict[int, str] = aim.contract.DomainState._VALUES_TO_NAMES

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def _vm_info(self, info: Any) -> VmInfo:
        return VmInfo(
            uuid=info.uuid,
            name=info.name,
            power_state=_POWER.get(self._states.get(info.state, ""), PowerState.UNKNOWN),
            cpu=info.virtualCpus,
            ram_mb=info.maxMemoryBytes // MiB,
        )

    async def define(self, xml: str) -> None:
        await self._aim.call("defineDomain", xml)

    async def undefine(self, uuid: str) -> None:
        await self._aim.call("undefineDomain", uuid)

    async def exists(self, uuid: str) -> bool:
        return bool(await self._aim.call("existDomain", uuid))

    async def get(self, uuid: str) -> VmInfo:
        return self._vm_info(await self._aim.call("getDomainInfo", uuid))

    async def list(self) -> list[VmInfo]:
        return [self._vm_info(d) for d in await self._aim.call("getDomains")]

    async def power_on(self, uuid: str) -> None:
        await self._aim.call("powerOn", uuid)

    async def power_off(self, uuid: str) -> None:
        await self._aim.call("powerOff", uuid)

    async def shutdown(self, uuid: str) -> None:
        await self._aim.call("shutdown", uuid)

    async def reset(self, uuid: str) -> None:
        await self._aim.call("reset", uuid)

    async def pause(self, uuid: str) -> None:
        await self._aim.call("pause", uuid)

    async def resume(self, uuid: str) -> None:
        await self._aim.call("resume", uuid)
