"""The simulator's knobs over the DC's HTTP port, for tests and benchmarks of a whole
running stack. Off unless the settings enable it: it lets anyone who reaches the port
invent hosts and break them.

    GET    /simulator/hosts                       the simulated hosts
    POST   /simulator/hosts                       {address, name?, hypervisorType?,
                                                   cpuCores?, cpuSockets?, ramBytes?}
    DELETE /simulator/hosts/{address}
    POST   /simulator/hosts/{address}/faults      {operation, kind: delay|fail|hang,
                                                   seconds?, times?}
    POST   /simulator/hosts/{address}/disconnect  {seconds}
    POST   /simulator/hosts/{address}/mayhem      {rate, kinds?: [create, destroy, power]}
    POST   /simulator/hosts/{address}/heal        every fault and mayhem removed
"""

from __future__ import annotations

from typing import Literal, TypeVar

import msgspec
from aiohttp import web

from abiquo_dc.hypervisors.simulator import Mayhem, SimulatedCloud, SimulatedHost
from abiquo_dc.protocol.definitions import HypervisorType

T = TypeVar("T")


class NewHost(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    address: str
    name: str = ""
    hypervisor_type: HypervisorType = HypervisorType.KVM
    cpu_cores: int = msgspec.field(default=16)
    cpu_sockets: int = 2
    ram_bytes: int = 64 * 1024**3


class Fault(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    operation: str
    kind: Literal["delay", "fail", "hang"]
    seconds: float = 0.0
    times: int = 1


class Disconnect(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    seconds: float


class MayhemRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    rate: float
    kinds: list[Mayhem] = msgspec.field(
        default_factory=lambda: [Mayhem.CREATE, Mayhem.DESTROY, Mayhem.POWER]
    )


class HostView(msgspec.Struct, kw_only=True, rename="camel"):
    address: str
    name: str
    hypervisor_type: HypervisorType
    vms: int
    disconnected: bool


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(data), status=status, content_type="application/json"
    )


async def _body(request: web.Request, kind: type[T]) -> T:
    try:
        return msgspec.json.decode(await request.read(), type=kind)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise web.HTTPBadRequest(text=f"invalid body: {exc}") from exc


def simulator_routes(cloud: SimulatedCloud) -> list[web.RouteDef]:
    def host_of(request: web.Request) -> SimulatedHost:
        address = request.match_info["address"]
        if address not in cloud.hosts:
            raise web.HTTPNotFound(text=f"no simulated host at {address}")
        return cloud.hosts[address]

    def view(host: SimulatedHost) -> HostView:
        return HostView(
            address=host.address,
            name=host.name,
            hypervisor_type=host.hypervisor_type,
            vms=len(host.vms),
            disconnected=host.disconnected,
        )

    async def list_hosts(request: web.Request) -> web.Response:
        return _json([view(h) for h in cloud.hosts.values()])

    async def add_host(request: web.Request) -> web.Response:
        new = await _body(request, NewHost)
        if new.address in cloud.hosts:
            raise web.HTTPConflict(text=f"a simulated host answers at {new.address} already")
        if new.cpu_cores < 1 or new.cpu_sockets < 1 or new.ram_bytes < 1:
            raise web.HTTPBadRequest(text="cpuCores, cpuSockets and ramBytes must be positive")
        host = cloud.add_host(
            new.address,
            name=new.name,
            hypervisor_type=new.hypervisor_type,
            cpu_cores=new.cpu_cores,
            cpu_sockets=new.cpu_sockets,
            ram_bytes=new.ram_bytes,
        )
        return _json(view(host), status=201)

    async def remove_host(request: web.Request) -> web.Response:
        cloud.remove_host(host_of(request).address)
        return web.Response(status=204)

    async def add_fault(request: web.Request) -> web.Response:
        host = host_of(request)
        fault = await _body(request, Fault)
        try:
            if fault.kind == "delay":
                host.delay(fault.operation, fault.seconds)
            elif fault.kind == "fail":
                host.fail(fault.operation, times=fault.times)
            else:
                host.hang(fault.operation)
        except ValueError as exc:  # an operation the simulator does not know
            raise web.HTTPBadRequest(text=str(exc)) from exc
        return web.Response(status=204)

    async def disconnect(request: web.Request) -> web.Response:
        host = host_of(request)
        host.disconnect((await _body(request, Disconnect)).seconds)
        return web.Response(status=204)

    async def mayhem(request: web.Request) -> web.Response:
        host = host_of(request)
        wanted = await _body(request, MayhemRequest)
        host.mayhem(wanted.rate, wanted.kinds)
        return web.Response(status=204)

    async def heal(request: web.Request) -> web.Response:
        host_of(request).heal()
        return web.Response(status=204)

    return [
        web.get("/simulator/hosts", list_hosts),
        web.post("/simulator/hosts", add_host),
        web.delete("/simulator/hosts/{address}", remove_host),
        web.post("/simulator/hosts/{address}/faults", add_fault),
        web.post("/simulator/hosts/{address}/disconnect", disconnect),
        web.post("/simulator/hosts/{address}/mayhem", mayhem),
        web.post("/simulator/hosts/{address}/heal", heal),
    ]
