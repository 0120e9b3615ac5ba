"""The domain operations the KVM and Xen drivers need, whichever way they reach the host.

Two channels implement it: `LibvirtDomains` (libvirt_domains.py), libvirt-python on a
remote URI such as qemu+tcp://host/system, and `AimDomains` (aim_domains.py), the same
operations through the host's AIM over thrift. Both address domains by UUID, raise the
drivers' taxonomy (base.py), and treat reaching the state a domain is in already as
success: power_on of a running domain, power_off or shutdown of a stopped one, pause of a
paused one, resume of a running one. reset, pause and resume of a domain that is not
running raise WrongState.
"""

from __future__ import annotations

import abc

from abiquo_dc.hypervisors.base import VmInfo

MiB = 1024 * 1024


class DomainChannel(abc.ABC):
    """Domain operations on one host. open() before use; close() is idempotent."""

    # "libvirt" or "aim": which way the operations go, for logs and tests.
    kind: str

    @abc.abstractmethod
    async def open(self) -> None:
        """Reach the host; HostUnreachable or AuthenticationFailed if not."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def define(self, xml: str) -> None:
        """Define the domain, or redefine it when its UUID exists already."""

    @abc.abstractmethod
    async def undefine(self, uuid: str) -> None:
        """Forget the domain's definition (with its managed save and snapshot metadata)."""

    @abc.abstractmethod
    async def exists(self, uuid: str) -> bool: ...

    @abc.abstractmethod
    async def get(self, uuid: str) -> VmInfo:
        """VmNotFound when there is none; InvalidDefinition for a malformed UUID."""

    @abc.abstractmethod
    async def list(self) -> list[VmInfo]: ...

    @abc.abstractmethod
    async def power_on(self, uuid: str) -> None:
        """Start it; a paused domain is on, and stays paused."""

    @abc.abstractmethod
    async def power_off(self, uuid: str) -> None: ...

    @abc.abstractmethod
    async def shutdown(self, uuid: str) -> None:
        """Ask the guest to shut down; returns once asked, not once it is off."""

    @abc.abstractmethod
    async def reset(self, uuid: str) -> None: ...

    @abc.abstractmethod
    async def pause(self, uuid: str) -> None: ...

    @abc.abstractmethod
    async def resume(self, uuid: str) -> None: ...
