"""Discovery on the driver contract: what answers at an address, and what it holds.

Every function opens its own driver and always closes it. A host is bounded by one
`timeout` as a whole (connect and the query together): a host that never answers costs
that much and no more, and over a range it never delays the others, which run
concurrently under a bound.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

from abiquo_dc.hypervisors.base import Driver, HostInfo, HostUnreachable, VmInfo
from abiquo_dc.hypervisors.probe import ProbePorts, probe
from abiquo_dc.hypervisors.registry import open_driver
from abiquo_dc.hypervisors.simulator import SimulatedCloud
from abiquo_dc.jsonhttp import parse_choice
from abiquo_dc.protocol.definitions import Credentials, HypervisorConnection, HypervisorType
from abiquo_dc.protocol.messages import (
    DiscoveredDatastore,
    DiscoveredHost,
    DiscoveredNic,
    DiscoveryFailure,
)
from abiquo_runtime.errors import AbiquoError, InvalidInput

T = TypeVar("T")

# The most addresses one range may hold: a /22.
MAX_RANGE = 1024

HostResult = DiscoveredHost | DiscoveryFailure

_PORTS = ProbePorts()
_NO_CREDENTIALS = Credentials()


def parse_address(address: str) -> str:
    """The address in its canonical form; InvalidInput when it is no IP address."""
    try:
        return str(ipaddress.ip_address(address.strip()))
    except ValueError:
        raise InvalidInput(f"{address!r} is not an IPv4 or IPv6 address") from None


def parse_hypervisor(name: str) -> HypervisorType:
    return parse_choice(HypervisorType, name, "hypervisor type")


def address_range(ip_from: str, ip_to: str, *, limit: int = MAX_RANGE) -> list[str]:
    """Every address from `ip_from` to `ip_to`, both included."""
    first = ipaddress.ip_address(parse_address(ip_from))
    last = ipaddress.ip_address(parse_address(ip_to))
    if first.version != last.version:
        raise InvalidInput(f"{ip_from} and {ip_to} are not of the same IP version")
    start, end = int(first), int(last)
    if end < start:
        raise InvalidInput(f"the range {ip_from}..{ip_to} ends before it starts")
    if end - start + 1 > limit:
        raise InvalidInput(
            f"the range {ip_from}..{ip_to} holds {end - start + 1} addresses; at most {limit}"
        )
    kind = type(first)
    return [str(kind(n)) for n in range(start, end + 1)]


def to_discovered(address: str, info: HostInfo) -> DiscoveredHost:
    """A driver's HostInfo as the protocol carries it."""
    return DiscoveredHost(
        address=address,
        name=info.name,
        hypervisor_type=info.hypervisor_type,
        version=info.version,
        cpu_cores=info.cpu_cores,
        cpu_sockets=info.cpu_sockets,
        ram_bytes=info.ram_bytes,
        nics=[DiscoveredNic(name=n.name, mac=n.mac, address=n.address) for n in info.nics],
        datastores=[
            DiscoveredDatastore(
                name=d.name,
                path=d.path,
                device=d.device,
                type=d.type,
                total_bytes=d.total_bytes,
                free_bytes=d.free_bytes,
                uuid=d.uuid,
            )
            for d in info.datastores
        ],
        initiator_iqn=info.initiator_iqn,
    )


async def _ask(
    connection: HypervisorConnection,
    question: Callable[[Driver], Awaitable[T]],
    *,
    simulator: SimulatedCloud | None,
    timeout: float,
) -> T:
    """Connect to the host, ask, always close; HostUnreachable past `timeout`, which
    covers the connection and the question together."""
    driver = open_driver(connection, simulator=simulator, timeout=timeout)
    try:
        async with asyncio.timeout(timeout):
            await driver.connect()
            return await question(driver)
    except TimeoutError:
        raise HostUnreachable(f"{connection.address} did not answer within {timeout} s") from None
    finally:
        await driver.close()


async def discover_host(
    connection: HypervisorConnection,
    *,
    simulator: SimulatedCloud | None = None,
    timeout: float,
) -> HostInfo:
    """The host at `connection`; HostUnreachable when it does not answer within `timeout`."""
    return await _ask(connection, lambda d: d.host_info(), simulator=simulator, timeout=timeout)


async def discover_vms(
    connection: HypervisorConnection,
    *,
    simulator: SimulatedCloud | None = None,
    timeout: float,
) -> list[VmInfo]:
    """Every VM on the host at `connection` (callers filter by uuid or name)."""
    return await _ask(connection, lambda d: d.list_vms(), simulator=simulator, timeout=timeout)


async def detect_type(
    address: str,
    *,
    timeout: float,
    simulator: SimulatedCloud | None = None,
    ports: ProbePorts = _PORTS,
) -> HypervisorType | None:
    """The type of the hypervisor answering at `address`; None when nothing answers."""
    if simulator is not None:
        host = simulator.hosts.get(address)
        if host is not None and not host.disconnected:
            return host.hypervisor_type
        if simulator.types is None:
            return None
        # Only some types are simulated: a real host may answer there.
    return await probe(address, timeout=timeout, ports=ports)


async def discover_range(
    addresses: Iterable[str],
    hypervisor: HypervisorType,
    credentials: Credentials = _NO_CREDENTIALS,
    *,
    port: int = 0,
    concurrency: int = 32,
    timeout: float,
    simulator: SimulatedCloud | None = None,
) -> list[HostResult]:
    """One result per address, in order: its host, or why there is none.

    At most `concurrency` hosts are asked at once; all are finished before this returns.
    """
    if concurrency < 1:
        raise InvalidInput(f"concurrency {concurrency} < 1")
    bound = asyncio.Semaphore(concurrency)

    async def one(address: str) -> HostResult:
        async with bound:
            connection = HypervisorConnection(
                type=hypervisor, address=address, port=port, credentials=credentials
            )
            try:
                info = await discover_host(connection, simulator=simulator, timeout=timeout)
            except AbiquoError as exc:
                return DiscoveryFailure(address=address, code=exc.code, message=exc.message)
            except Exception as exc:  # a driver bug must not fail the whole range
                return DiscoveryFailure(
                    address=address, code="DC-0", message=f"{type(exc).__name__}: {exc}"
                )
            return to_discovered(address, info)

    return list(await asyncio.gather(*(one(a) for a in addresses)))
