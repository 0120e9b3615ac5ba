"""Asking a datacenter about hypervisor hosts: discovery, detection and monitoring.

Central never talks to a hypervisor: it asks the datacenter's Discovery Manager what
answers at an address and what the host holds (DiscoverHosts, DetectHypervisor), and
tells its Virtual System Monitor which hosts to watch (MonitorHost, StopMonitoringHost).
`DatacenterCalls` sends those requests over the link and turns the datacenter's
failures into the API's errors; the discover_* functions check that the datacenter can
answer (503 DC-1 when its heartbeats stopped, 409 DC-2 when its process is unknown)
before anything is sent.

A discovered host is not saved: it comes back as a MachineSpec, ready to be posted to
a rack once the administrator has chosen its virtual switch and enabled datastores.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from abiquo_central.infrastructure.datacenters import reachable_datacenter
from abiquo_central.infrastructure.machines import MachineSpec, from_discovered
from abiquo_central.link import DatacenterRequests
from abiquo_dc.protocol.definitions import Credentials, HypervisorType
from abiquo_dc.protocol.messages import (
    DetectHypervisor,
    DiscoveredHost,
    DiscoverHosts,
    DiscoveryFailure,
    HostsDiscovered,
    HypervisorDetected,
    Message,
)
from abiquo_dc.protocol.monitoring import (
    MonitoredHost,
    MonitorHost,
    MonitoringDone,
    StopMonitoringHost,
    Subscribe,
    Subscription,
)
from abiquo_runtime.errors import (
    AbiquoError,
    Conflict,
    InvalidInput,
    NotFound,
    TemporaryError,
)

NOTHING_ANSWERED = "DISCOVERY-1"
NO_HYPERVISOR = "DISCOVERY-2"
INVALID_DISCOVERY = "DISCOVERY-3"
UNEXPECTED_REPLY = "DISCOVERY-4"

# The most addresses one discovermultiple may hold: the datacenter's own bound (a /22).
MAX_RANGE = 1024
# How long the Discovery Manager gives one host, and how many it asks at once (its
# defaults): a range of N addresses takes up to ceil(N / concurrency) such rounds.
DC_HOST_TIMEOUT = 10.0
DC_CONCURRENCY = 32
# How many failures an error message names before it only counts the rest.
_NAMED_FAILURES = 10

# The datacenter's failure codes, by what they mean to the caller who asked.
_INPUT_CODES = frozenset({"GEN-1", "HV-AUTH", "HV-NOT-SUPPORTED", "HV-INVALID"})
_ABSENT_CODES = frozenset({"GEN-2", "HV-UNREACHABLE", "DISC-NO-HYPERVISOR"})


def parse_address(text: str, what: str = "ip") -> str:
    """The IP address in its canonical form; InvalidInput when it is none."""
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise InvalidInput(
            f"'{what}' must be an IPv4 or IPv6 address, not {text!r}", code=INVALID_DISCOVERY
        ) from None


def parse_hypervisor(text: str) -> HypervisorType:
    """The hypervisor type by its name (KVM, VMX_04, ...); InvalidInput otherwise."""
    try:
        return HypervisorType(text.strip().upper())
    except ValueError:
        known = ", ".join(t.value for t in HypervisorType)
        raise InvalidInput(
            f"unknown hypervisor type {text!r}; one of: {known}", code=INVALID_DISCOVERY
        ) from None


def parse_port(text: str | None) -> int:
    """The port (0, or absent: the hypervisor type's usual one); InvalidInput otherwise."""
    if text is None or not text.strip():
        return 0
    raw = text.strip()
    if not raw.isdigit() or int(raw) > 65535:
        raise InvalidInput(
            f"'port' must be a number from 0 to 65535, not {text!r}", code=INVALID_DISCOVERY
        )
    return int(raw)


def range_size(ip_from: str, ip_to: str, *, limit: int = MAX_RANGE) -> int:
    """How many addresses ip_from..ip_to holds; InvalidInput when either is no address,
    or the range is reversed, mixes IP versions or holds more than `limit`."""
    first = ipaddress.ip_address(parse_address(ip_from, "ipFrom"))
    last = ipaddress.ip_address(parse_address(ip_to, "ipTo"))
    if first.version != last.version:
        raise InvalidInput(
            f"{ip_from} and {ip_to} are not of the same IP version", code=INVALID_DISCOVERY
        )
    size = int(last) - int(first) + 1
    if size < 1:
        raise InvalidInput(
            f"the range {ip_from}..{ip_to} ends before it starts", code=INVALID_DISCOVERY
        )
    if size > limit:
        raise InvalidInput(
            f"the range {ip_from}..{ip_to} holds {size} addresses; at most {limit} at once",
            code=INVALID_DISCOVERY,
        )
    return size


def failure_error(failure: DiscoveryFailure) -> AbiquoError:
    """What one address's failure means to the caller: its input was wrong (400), there
    is no host (404), or the hypervisor failed otherwise (503). The datacenter's code
    is kept."""
    text = f"{failure.address}: {failure.message}"
    if failure.code in _INPUT_CODES:
        return InvalidInput(text, code=failure.code)
    if failure.code in _ABSENT_CODES:
        return NotFound(text, code=failure.code)
    return TemporaryError(text, code=failure.code)


def _summary(failures: list[DiscoveryFailure]) -> str:
    named = [f"{f.address}: {f.code} {f.message}" for f in failures[:_NAMED_FAILURES]]
    more = len(failures) - len(named)
    return "; ".join(named) + (f"; and {more} more" if more > 0 else "")


@dataclass(frozen=True, slots=True)
class DatacenterCalls:
    """The requests central makes of a datacenter about hosts, over `link`.

    `request_timeout` bounds a request that costs the datacenter little; discovery
    adds the time the datacenter may spend on the hosts themselves.
    """

    link: DatacenterRequests
    request_timeout: float
    host_timeout: float = DC_HOST_TIMEOUT
    concurrency: int = DC_CONCURRENCY

    def discovery_timeout(self, addresses: int) -> float:
        rounds = math.ceil(max(1, addresses) / max(1, self.concurrency))
        return self.request_timeout + rounds * self.host_timeout

    async def _request(self, dc_uuid: str, message: Message, timeout: float) -> Message:
        try:
            return await self.link.request(dc_uuid, message, timeout=timeout)
        except (TemporaryError, InvalidInput, NotFound, Conflict):
            raise
        except AbiquoError as exc:
            # The datacenter's handler failed: RequestFailed, raised by the link with
            # the datacenter's own code.
            if exc.code in _INPUT_CODES:
                raise InvalidInput(exc.message, code=exc.code) from exc
            if exc.code in _ABSENT_CODES:
                raise NotFound(exc.message, code=exc.code) from exc
            raise TemporaryError(f"the datacenter failed: {exc.message}", code=exc.code) from exc

    async def discover(
        self,
        dc_uuid: str,
        *,
        hypervisor: HypervisorType,
        addresses: list[str] | None = None,
        ip_from: str = "",
        ip_to: str = "",
        port: int = 0,
        credentials: Credentials | None = None,
    ) -> HostsDiscovered:
        count = len(addresses or []) + (range_size(ip_from, ip_to) if ip_from or ip_to else 0)
        reply = await self._request(
            dc_uuid,
            DiscoverHosts(
                dc_uuid=dc_uuid,
                hypervisor=hypervisor,
                addresses=list(addresses or []),
                ip_from=ip_from,
                ip_to=ip_to,
                port=port,
                credentials=credentials or Credentials(),
            ),
            self.discovery_timeout(count),
        )
        if not isinstance(reply, HostsDiscovered):
            raise TemporaryError(
                f"the datacenter answered {type(reply).__name__} to a discovery",
                code=UNEXPECTED_REPLY,
            )
        return reply

    async def detect(self, dc_uuid: str, address: str) -> HypervisorType | None:
        reply = await self._request(
            dc_uuid,
            DetectHypervisor(dc_uuid=dc_uuid, address=address),
            self.discovery_timeout(1),
        )
        if not isinstance(reply, HypervisorDetected):
            raise TemporaryError(
                f"the datacenter answered {type(reply).__name__} to a detection",
                code=UNEXPECTED_REPLY,
            )
        return reply.hypervisor

    async def monitor(self, dc_uuid: str, host: MonitoredHost) -> None:
        """The datacenter's VSM watches `host` from now on (replacing what it knew)."""
        reply = await self._request(dc_uuid, MonitorHost(host=host), self.request_timeout)
        if not isinstance(reply, MonitoringDone):
            raise TemporaryError(
                f"the datacenter answered {type(reply).__name__} to MonitorHost",
                code=UNEXPECTED_REPLY,
            )

    async def subscribe(self, dc_uuid: str, subscriptions: list[Subscription]) -> None:
        """The datacenter's VSM reports these VMs' changes from now on."""
        reply = await self._request(
            dc_uuid, Subscribe(subscriptions=subscriptions), self.request_timeout
        )
        if not isinstance(reply, MonitoringDone):
            raise TemporaryError(
                f"the datacenter answered {type(reply).__name__} to Subscribe",
                code=UNEXPECTED_REPLY,
            )

    async def stop_monitoring(self, dc_uuid: str, address: str) -> None:
        """The datacenter's VSM stops watching `address` (nothing when it did not)."""
        reply = await self._request(
            dc_uuid, StopMonitoringHost(address=address), self.request_timeout
        )
        if not isinstance(reply, MonitoringDone):
            raise TemporaryError(
                f"the datacenter answered {type(reply).__name__} to StopMonitoringHost",
                code=UNEXPECTED_REPLY,
            )


async def _uuid(engine: AsyncEngine, dc_id: int, now: datetime, liveness_timeout: float) -> str:
    dc = await reachable_datacenter(engine, dc_id, now=now, liveness_timeout=liveness_timeout)
    assert dc.uuid is not None  # reachable_datacenter refuses a datacenter without one
    return dc.uuid


async def discover_single(
    engine: AsyncEngine,
    calls: DatacenterCalls,
    dc_id: int,
    *,
    ip: str,
    hypervisor: HypervisorType,
    port: int = 0,
    user: str = "",
    password: str = "",
    now: datetime,
    liveness_timeout: float,
) -> MachineSpec:
    """The host at `ip` as a machine to post; its failure as an error (see failure_error)."""
    dc_uuid = await _uuid(engine, dc_id, now, liveness_timeout)
    found = await calls.discover(
        dc_uuid,
        hypervisor=hypervisor,
        addresses=[ip],
        port=port,
        credentials=Credentials(user=user, password=password),
    )
    if found.hosts:
        return from_discovered(found.hosts[0], port=port, user=user)
    if found.errors:
        raise failure_error(found.errors[0])
    raise NotFound(f"no host answers at {ip}", code=NOTHING_ANSWERED)


async def discover_multiple(
    engine: AsyncEngine,
    calls: DatacenterCalls,
    dc_id: int,
    *,
    ip_from: str,
    ip_to: str,
    hypervisor: HypervisorType,
    port: int = 0,
    user: str = "",
    password: str = "",
    now: datetime,
    liveness_timeout: float,
) -> list[MachineSpec]:
    """The hosts that answered in ip_from..ip_to, in address order; the addresses that
    gave none are left out. NotFound (DISCOVERY-1) naming the failures when none did."""
    range_size(ip_from, ip_to)  # refused before the datacenter is asked
    dc_uuid = await _uuid(engine, dc_id, now, liveness_timeout)
    found = await calls.discover(
        dc_uuid,
        hypervisor=hypervisor,
        ip_from=ip_from,
        ip_to=ip_to,
        port=port,
        credentials=Credentials(user=user, password=password),
    )
    if not found.hosts:
        raise NotFound(
            f"no host of type {hypervisor.value} answered in {ip_from}..{ip_to}: "
            + (_summary(found.errors) or "nothing was found"),
            code=NOTHING_ANSWERED,
        )
    hosts: list[DiscoveredHost] = sorted(
        found.hosts, key=lambda h: int(ipaddress.ip_address(h.address))
    )
    return [from_discovered(h, port=port, user=user) for h in hosts]


async def detect_hypervisor(
    engine: AsyncEngine,
    calls: DatacenterCalls,
    dc_id: int,
    *,
    ip: str,
    now: datetime,
    liveness_timeout: float,
) -> HypervisorType:
    """The type of the hypervisor at `ip`; NotFound (DISCOVERY-2) when nothing answers."""
    dc_uuid = await _uuid(engine, dc_id, now, liveness_timeout)
    found = await calls.detect(dc_uuid, ip)
    if found is None:
        raise NotFound(f"no hypervisor answers at {ip}", code=NO_HYPERVISOR)
    return found
