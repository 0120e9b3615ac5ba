"""/api/admin/datacenters/{dc}/action/{discoversingle, discovermultiple, hypervisor}:
what the datacenter finds at an address, ready to be posted as a machine.

All three need PHYS_DC_ALLOW_MODIFY_SERVERS (discovery is the first step of adding a
server, and its answers carry what the credentials open) and the datacenter reachable:
503 DC-1 when its heartbeats stopped, 409 DC-2 when central does not know its process.

- `discoversingle?ip=&hypervisor=&user=&password=&port=` → a `machine`, not saved. When
  the host gives none: 404 (HV-UNREACHABLE: nothing answers), 400 (HV-AUTH: credentials
  refused; HV-NOT-SUPPORTED), 503 (the hypervisor failed otherwise).
- `discovermultiple?ipFrom=&ipTo=&...` → `machines`: the hosts that answered, by address;
  the addresses that gave none are left out. When none answered: 404 DISCOVERY-1, whose
  message names the failures. At most 1024 addresses (400 beyond).
- `hypervisor?ip=` → the type's name as text/plain; 404 DISCOVERY-2 when none answers.
"""

from __future__ import annotations

from aiohttp import web

from abiquo_central.api.endpoint import QueryParam, endpoint
from abiquo_central.api.keys import ENGINE
from abiquo_central.api.params import path_id
from abiquo_central.api.render import render, render_collection
from abiquo_central.api.resources.machines import Machine, calls, liveness, spec_model
from abiquo_central.infrastructure import discovery as domain
from abiquo_central.tenants.privileges import PHYS_DC_ALLOW_MODIFY_SERVERS
from abiquo_runtime.errors import InvalidInput

_CREDENTIALS = (
    QueryParam("hypervisor", str, "The hypervisor type: KVM, VMX_04, XENSERVER, ...", True),
    QueryParam("user", str, "The user the hypervisor (or its manager) is reached as"),
    QueryParam("password", str, "Its password"),
    QueryParam("port", int, "The port (0 or absent: the type's usual one)"),
)


def _required(request: web.Request, name: str) -> str:
    value = request.query.get(name, "")
    if not value.strip():
        raise InvalidInput(f"'{name}' is required", code=domain.INVALID_DISCOVERY)
    return value


@endpoint(
    produces=Machine.media.one,
    privileges=[PHYS_DC_ALLOW_MODIFY_SERVERS],
    query=[QueryParam("ip", str, "The host's address", True), *_CREDENTIALS],
)
async def discover_single(request: web.Request) -> web.Response:
    dc_id = path_id(request, "dc")
    ip = domain.parse_address(_required(request, "ip"), "ip")
    hypervisor = domain.parse_hypervisor(_required(request, "hypervisor"))
    port = domain.parse_port(request.query.get("port"))
    now, timeout = liveness(request)
    spec = await domain.discover_single(
        request.config_dict[ENGINE],
        calls(request),
        dc_id,
        ip=ip,
        hypervisor=hypervisor,
        port=port,
        user=request.query.get("user", ""),
        password=request.query.get("password", ""),
        now=now,
        liveness_timeout=timeout,
    )
    return render(request, spec_model(spec))


@endpoint(
    produces=Machine.media.many,
    privileges=[PHYS_DC_ALLOW_MODIFY_SERVERS],
    query=[
        QueryParam("ipFrom", str, "The first address of the range", True),
        QueryParam("ipTo", str, "The last address of the range (at most 1024 in all)", True),
        *_CREDENTIALS,
    ],
)
async def discover_multiple(request: web.Request) -> web.Response:
    dc_id = path_id(request, "dc")
    ip_from = domain.parse_address(_required(request, "ipFrom"), "ipFrom")
    ip_to = domain.parse_address(_required(request, "ipTo"), "ipTo")
    domain.range_size(ip_from, ip_to)
    hypervisor = domain.parse_hypervisor(_required(request, "hypervisor"))
    port = domain.parse_port(request.query.get("port"))
    now, timeout = liveness(request)
    specs = await domain.discover_multiple(
        request.config_dict[ENGINE],
        calls(request),
        dc_id,
        ip_from=ip_from,
        ip_to=ip_to,
        hypervisor=hypervisor,
        port=port,
        user=request.query.get("user", ""),
        password=request.query.get("password", ""),
        now=now,
        liveness_timeout=timeout,
    )
    return render_collection(request, [spec_model(s) for s in specs], media=Machine.media)


@endpoint(
    privileges=[PHYS_DC_ALLOW_MODIFY_SERVERS],
    query=[QueryParam("ip", str, "The host's address", True)],
)
async def detect_hypervisor(request: web.Request) -> web.Response:
    dc_id = path_id(request, "dc")
    ip = domain.parse_address(_required(request, "ip"), "ip")
    now, timeout = liveness(request)
    found = await domain.detect_hypervisor(
        request.config_dict[ENGINE],
        calls(request),
        dc_id,
        ip=ip,
        now=now,
        liveness_timeout=timeout,
    )
    return web.Response(text=found.value, content_type="text/plain")


def add_routes(router: web.UrlDispatcher) -> None:
    base = r"/admin/datacenters/{dc:\d+}/action"
    router.add_get(base + "/discoversingle", discover_single, name="discoversingle")
    router.add_get(base + "/discovermultiple", discover_multiple, name="discovermultiple")
    router.add_get(base + "/hypervisor", detect_hypervisor, name="detecthypervisor")
