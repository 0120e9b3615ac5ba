"""The VSM's HTTP routes, as Abiquo's VSM answered them.

- `GET /vsm/physicalmachines`: the monitored hosts as a JSON list of
  `{"address", "type", "port"}` (`port` null: the type's usual one); credentials are
  never sent back.
- `POST /vsm/physicalmachines`: monitor a host, given as a JSON body
  `{"address", "type", "port"?, "user"?, "password"?}` or, with an empty body, as the
  query `?address=&type=&port=&user=&password=` (Abiquo's older form). 201, with
  `Location: /vsm/physicalmachines/{address}` and the host as the listing shows it.
  A host monitored already is monitored again with what was sent.
- `DELETE /vsm/physicalmachines/{address}`: stop monitoring it. 204; 404 when it was not
  monitored.
- `GET /vsm/physicalmachines/{address}/virtualmachine/{name}`: send the subscribed VM's
  current state to central again (republish). 204; 404 when no VM of that name (or uuid)
  is subscribed on that host.
- `DELETE /vsm/physicalmachines/{address}/virtualmachine/{name}`: forget what is known of
  the VM (invalidate): its next observed state is sent as news. 204; 404 as above.
- `GET /vsm/subscriptions`: the subscriptions as a JSON list of
  `{"vm_uuid", "vm_name", "host", "state"}`.
- `POST /vsm/subscriptions`: one subscription or a JSON list of them. 201 with
  `{"count": n}`.
- `DELETE /vsm/subscriptions/{vm_uuid}`, and `DELETE /vsm/subscriptions` with a JSON list
  of VM uuids as the body: unsubscribe. 204; 404 when none of them was subscribed.

Every input is checked before anything is changed. Errors are JSON `{"code", "message"}`
with these statuses: 400 bad input (malformed JSON, a field of the wrong type or unknown,
an unknown hypervisor type, a missing or malformed address, a port out of 1-65535),
404 not found, 409 a conflict, 503 the VSM is not running (VSM-STOPPED) or its store is
unreachable, 500 anything else.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from urllib.parse import quote

import msgspec
from aiohttp import web

from abiquo_dc.jsonhttp import answering, decode_body, json_response, parse_choice
from abiquo_dc.protocol.definitions import Credentials, HypervisorType
from abiquo_dc.protocol.jobs import ObservedState
from abiquo_dc.protocol.messages import ServiceState
from abiquo_dc.protocol.monitoring import MonitoredHost, Subscription
from abiquo_dc.vsm.service import VirtualSystemMonitor, VsmNotRunning
from abiquo_runtime.errors import (
    InvalidInput,
    NotFound,
)

_HOST_FIELDS = ("address", "type", "port", "user", "password")
# A DNS name (RFC 1123): dot-separated labels of letters, digits and inner hyphens.
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


# -- what the routes read and write --------------------------------------------------------


class HostBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A host to monitor, as POSTed; `type` is checked by hand for a clearer message."""

    address: str
    type: str
    # None: the type's usual port.
    port: int | None = None
    user: str = ""
    password: str = ""


class HostView(msgspec.Struct, kw_only=True):
    """A monitored host as it is shown: never its credentials."""

    address: str
    type: HypervisorType
    # None: the type's usual port.
    port: int | None


class SubscriptionBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    vm_uuid: str
    vm_name: str = ""
    host: str
    state: ObservedState | None = None


class Count(msgspec.Struct, kw_only=True):
    count: int


_HOST = msgspec.json.Decoder(HostBody)
_SUBSCRIPTIONS: msgspec.json.Decoder[SubscriptionBody | list[SubscriptionBody]] = (
    msgspec.json.Decoder(SubscriptionBody | list[SubscriptionBody])
)
_UUIDS = msgspec.json.Decoder(list[str])


# -- answers and errors --------------------------------------------------------------------


# -- input ---------------------------------------------------------------------------------


def parse_address(text: str) -> str:
    """`text` when it is an IP address or a DNS name; InvalidInput otherwise."""
    if not text:
        raise InvalidInput("a host needs an address")
    try:
        ipaddress.ip_address(text)
    except ValueError:
        # All digits in the last label: a mistyped IP address, not a name.
        if not _HOSTNAME.match(text) or text.rsplit(".", 1)[-1].isdigit():
            raise InvalidInput(f"{text!r} is no IP address or host name") from None
    return text


def parse_type(name: str) -> HypervisorType:
    return parse_choice(HypervisorType, name, "hypervisor type")


def check_port(port: int | None) -> int:
    """The port to store (0: the type's usual one); InvalidInput when out of 1-65535."""
    if port is None:
        return 0
    if not 1 <= port <= 65535:
        raise InvalidInput(f"port {port} is out of range (1-65535)")
    return port


def _query_port(text: str | None) -> int | None:
    if text is None or text == "":
        return None
    try:
        return int(text)
    except ValueError:
        raise InvalidInput(f"port {text!r} is not a number") from None


def host_from_body(body: bytes) -> MonitoredHost:
    given = decode_body(body, _HOST)
    return MonitoredHost(
        address=parse_address(given.address),
        type=parse_type(given.type),
        port=check_port(given.port),
        credentials=Credentials(user=given.user, password=given.password),
    )


def host_from_query(query: Mapping[str, str]) -> MonitoredHost:
    """Abiquo's older form: the host in the query string."""
    return MonitoredHost(
        address=parse_address(query.get("address", "")),
        type=parse_type(query.get("type", "")),
        port=check_port(_query_port(query.get("port"))),
        credentials=Credentials(user=query.get("user", ""), password=query.get("password", "")),
    )


def subscriptions_from_body(body: bytes) -> list[Subscription]:
    if not body.strip():
        raise InvalidInput("the body must be a subscription or a JSON list of them")
    given = decode_body(body, _SUBSCRIPTIONS)
    items = given if isinstance(given, list) else [given]
    if not items:
        raise InvalidInput("no subscriptions given")
    seen: set[str] = set()
    subscriptions = []
    for item in items:
        if not item.vm_uuid:
            raise InvalidInput("a subscription needs a VM uuid")
        if not item.host:
            raise InvalidInput(f"the subscription of {item.vm_uuid} needs a host")
        parse_address(item.host)
        if item.vm_uuid in seen:
            raise InvalidInput(f"VM {item.vm_uuid} is subscribed twice in the same request")
        seen.add(item.vm_uuid)
        subscriptions.append(
            Subscription(
                vm_uuid=item.vm_uuid, vm_name=item.vm_name, host=item.host, state=item.state
            )
        )
    return subscriptions


def uuids_from_body(body: bytes) -> list[str]:
    if not body.strip():
        raise InvalidInput("the body must be a JSON list of VM uuids")
    uuids = decode_body(body, _UUIDS)
    if not uuids:
        raise InvalidInput("no VM uuids given")
    if not all(uuids):
        raise InvalidInput("a VM uuid is empty")
    return list(dict.fromkeys(uuids))


def view(host: MonitoredHost) -> HostView:
    return HostView(address=host.address, type=host.type, port=host.port or None)


# -- the routes ----------------------------------------------------------------------------


def vsm_routes(vsm: VirtualSystemMonitor) -> list[web.RouteDef]:
    hosts_path = f"/{vsm.path}/physicalmachines"
    subscriptions_path = f"/{vsm.path}/subscriptions"

    async def list_hosts(request: web.Request) -> web.Response:
        # The listing is read from the monitors, which a stopped VSM has none of: saying
        # "none" then would be a lie.
        if vsm.state is not ServiceState.RUNNING:
            raise VsmNotRunning(f"the VSM is {vsm.state.value}")
        return json_response([view(host) for host in vsm.hosts()])

    async def monitor_host(request: web.Request) -> web.Response:
        body = await request.read()
        if body.strip():
            if any(name in request.query for name in _HOST_FIELDS):
                raise InvalidInput("send the host in the body or in the query, not both")
            host = host_from_body(body)
        else:
            host = host_from_query(request.query)
        await vsm.monitor_host(host)
        location = f"{hosts_path}/{quote(host.address, safe=':')}"
        return json_response(view(host), status=201, headers={"Location": location})

    async def stop_monitoring(request: web.Request) -> web.Response:
        address = request.match_info["id"]
        if not await vsm.stop_monitoring(address):
            raise NotFound(f"{address} is not monitored", code="VSM-HOST-NOT-FOUND")
        return web.Response(status=204)

    async def republish(request: web.Request) -> web.Response:
        await vsm.republish(request.match_info["id"], request.match_info["name"])
        return web.Response(status=204)

    async def invalidate(request: web.Request) -> web.Response:
        await vsm.invalidate(request.match_info["id"], request.match_info["name"])
        return web.Response(status=204)

    async def list_subscriptions(request: web.Request) -> web.Response:
        return json_response(await vsm.subscriptions())

    async def subscribe(request: web.Request) -> web.Response:
        subscriptions = subscriptions_from_body(await request.read())
        return json_response(Count(count=await vsm.subscribe(subscriptions)), status=201)

    async def unsubscribe(vm_uuids: list[str]) -> web.Response:
        if not await vsm.unsubscribe(vm_uuids):
            what = vm_uuids[0] if len(vm_uuids) == 1 else "none of the VMs"
            raise NotFound(f"{what} is not subscribed", code="VSM-NOT-SUBSCRIBED")
        return web.Response(status=204)

    async def unsubscribe_one(request: web.Request) -> web.Response:
        return await unsubscribe([request.match_info["vm_uuid"]])

    async def unsubscribe_many(request: web.Request) -> web.Response:
        return await unsubscribe(uuids_from_body(await request.read()))

    vm_path = f"{hosts_path}/{{id}}/virtualmachine/{{name}}"
    return [
        web.get(hosts_path, answering(list_hosts)),
        web.post(hosts_path, answering(monitor_host)),
        web.delete(f"{hosts_path}/{{id}}", answering(stop_monitoring)),
        web.get(vm_path, answering(republish)),
        web.delete(vm_path, answering(invalidate)),
        web.get(subscriptions_path, answering(list_subscriptions)),
        web.post(subscriptions_path, answering(subscribe)),
        web.delete(subscriptions_path, answering(unsubscribe_many)),
        web.delete(f"{subscriptions_path}/{{vm_uuid}}", answering(unsubscribe_one)),
    ]
