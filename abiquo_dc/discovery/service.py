"""Discovery Manager (Abiquo's nodecollector): what hypervisor answers at an address,
and what it holds.

HTTP, as Abiquo's nodecollector answers it:

- `GET /nodecollector/{ip}/hypervisor`: the type's name as text/plain; 404 when nothing
  answers.
- `GET /nodecollector/{ip}/host?hypervisor=KVM&user=&password=&port=`: the host as JSON
  (without `hypervisor`, the type is detected first).
- `GET /nodecollector/{ip}/virtualsystem?hypervisor=KVM[&uuid=|&name=]`: the VMs as a
  JSON list, or the one VM asked for (404 when it is not there).

Errors are JSON `{"code", "message"}` with these statuses: 400 bad input (address,
hypervisor type, port), 401 the hypervisor refused the credentials (HV-AUTH), 404 not
found, 501 no driver for the type (HV-NOT-SUPPORTED), 503 the host did not answer
(HV-UNREACHABLE, or any temporary error), 502 the hypervisor failed otherwise.

On the bus (requests from central over the link): DiscoverHosts → HostsDiscovered and
DetectHypervisor → HypervisorDetected.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from abiquo_dc.bus import Bus, Unsubscribe
from abiquo_dc.discovery.discover import (
    MAX_RANGE,
    address_range,
    detect_type,
    discover_host,
    discover_range,
    discover_vms,
    parse_address,
    parse_hypervisor,
    to_discovered,
)
from abiquo_dc.hypervisors.base import AuthenticationFailed, NotSupported
from abiquo_dc.hypervisors.simulator import SimulatedCloud
from abiquo_dc.jsonhttp import error_response, json_response, status_for
from abiquo_dc.protocol.definitions import Credentials, HypervisorConnection
from abiquo_dc.protocol.messages import (
    DetectHypervisor,
    DiscoveredHost,
    DiscoverHosts,
    DiscoveryFailure,
    HostsDiscovered,
    HypervisorDetected,
)
from abiquo_dc.subsystem import Subsystem
from abiquo_runtime.backoff import Backoff
from abiquo_runtime.errors import AbiquoError, InvalidInput, NotFound

# The nodecollector's own statuses, as Abiquo answered them; the hypervisor's failures
# of its own are a bad gateway.
_STATUSES = ((AuthenticationFailed, 401), (NotSupported, 501))


def _status(exc: AbiquoError) -> int:
    return status_for(exc, _STATUSES, default=502)


class DiscoveryManager(Subsystem):
    name = "discovery"
    path = "nodecollector"

    def __init__(
        self,
        *,
        bus: Bus,
        dc_uuid: str,
        backoff: Callable[[], Backoff] = Backoff,
        simulator: SimulatedCloud | None = None,
        concurrency: int = 32,
        timeout: float = 10.0,
    ) -> None:
        super().__init__(bus=bus, dc_uuid=dc_uuid, backoff=backoff)
        self.simulator = simulator
        self.concurrency = concurrency
        self.timeout = timeout
        self._unserve: list[Unsubscribe] = []

    # -- lifecycle -----------------------------------------------------------------------

    async def setup(self) -> None:
        self._unserve.append(self.bus.serve(DiscoverHosts, self.on_discover_hosts))
        self._unserve.append(self.bus.serve(DetectHypervisor, self.on_detect_hypervisor))

    async def teardown(self) -> None:
        while self._unserve:
            self._unserve.pop()()

    # -- the bus -------------------------------------------------------------------------

    async def on_discover_hosts(self, request: DiscoverHosts) -> HostsDiscovered:
        addresses = [parse_address(a) for a in request.addresses]
        if request.ip_from or request.ip_to:
            if not (request.ip_from and request.ip_to):
                raise InvalidInput("a range needs both ip_from and ip_to")
            addresses += address_range(request.ip_from, request.ip_to)
        addresses = list(dict.fromkeys(addresses))
        if not addresses:
            raise InvalidInput("no addresses to discover")
        if len(addresses) > MAX_RANGE:
            raise InvalidInput(f"{len(addresses)} addresses; at most {MAX_RANGE} at once")
        _check_port(request.port)
        results = await discover_range(
            addresses,
            request.hypervisor,
            request.credentials,
            port=request.port,
            concurrency=self.concurrency,
            timeout=self.timeout,
            simulator=self.simulator,
        )
        return HostsDiscovered(
            hosts=[r for r in results if isinstance(r, DiscoveredHost)],
            errors=[r for r in results if isinstance(r, DiscoveryFailure)],
        )

    async def on_detect_hypervisor(self, request: DetectHypervisor) -> HypervisorDetected:
        address = parse_address(request.address)
        found = await detect_type(address, timeout=self.timeout, simulator=self.simulator)
        return HypervisorDetected(address=address, hypervisor=found)

    # -- HTTP ----------------------------------------------------------------------------

    def routes(self) -> list[web.RouteDef]:
        base = f"/{self.path}/{{ip}}"
        return [
            web.get(f"{base}/hypervisor", self.http_hypervisor),
            web.get(f"{base}/host", self.http_host),
            web.get(f"{base}/virtualsystem", self.http_virtualsystem),
        ]

    async def http_hypervisor(self, request: web.Request) -> web.Response:
        try:
            address = parse_address(request.match_info["ip"])
        except AbiquoError as exc:
            return error_response(_status(exc), exc.code, exc.message)
        found = await detect_type(address, timeout=self.timeout, simulator=self.simulator)
        if found is None:
            return web.Response(status=404, text=f"no hypervisor answers at {address}")
        return web.Response(text=found.value)

    async def _connection(self, request: web.Request) -> HypervisorConnection:
        address = parse_address(request.match_info["ip"])
        query = request.query
        port = _parse_port(query.get("port", ""))
        name = query.get("hypervisor", "")
        if name:
            kind = parse_hypervisor(name)
        else:
            found = await detect_type(address, timeout=self.timeout, simulator=self.simulator)
            if found is None:
                raise NotFound(f"no hypervisor answers at {address}", code="DISC-NO-HYPERVISOR")
            kind = found
        return HypervisorConnection(
            type=kind,
            address=address,
            port=port,
            credentials=Credentials(user=query.get("user", ""), password=query.get("password", "")),
        )

    async def http_host(self, request: web.Request) -> web.Response:
        try:
            connection = await self._connection(request)
            info = await discover_host(connection, simulator=self.simulator, timeout=self.timeout)
        except AbiquoError as exc:
            return error_response(_status(exc), exc.code, exc.message)
        return json_response(to_discovered(connection.address, info))

    async def http_virtualsystem(self, request: web.Request) -> web.Response:
        uuid = request.query.get("uuid", "")
        name = request.query.get("name", "")
        try:
            if uuid and name:
                raise InvalidInput("ask by uuid or by name, not both")
            connection = await self._connection(request)
            vms = await discover_vms(connection, simulator=self.simulator, timeout=self.timeout)
        except AbiquoError as exc:
            return error_response(_status(exc), exc.code, exc.message)
        if not (uuid or name):
            return json_response(vms)
        for vm in vms:
            if (uuid and vm.uuid == uuid) or (name and vm.name == name):
                return json_response(vm)
        what = f"uuid {uuid}" if uuid else f"name {name!r}"
        return error_response(404, "HV-VM-NOT-FOUND", f"no VM with {what} on {connection.address}")


def _parse_port(text: str) -> int:
    if not text:
        return 0
    try:
        port = int(text)
    except ValueError:
        raise InvalidInput(f"port {text!r} is not a number") from None
    _check_port(port)
    return port


def _check_port(port: int) -> None:
    if not 0 <= port <= 65535:
        raise InvalidInput(f"port {port} is out of range (0-65535)")
