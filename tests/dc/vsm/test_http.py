"""The VSM through its HTTP routes, as Abiquo's VSM answered them, over simulated hosts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from abiquo_dc.bus import Bus
from abiquo_dc.hypervisors.base import Driver, PowerState
from abiquo_dc.hypervisors.simulator import SimulatedCloud, SimulatedHost, SimulatorDriver
from abiquo_dc.protocol.definitions import (
    HypervisorConnection,
    HypervisorType,
    VirtualMachineDefinition,
)
from abiquo_dc.protocol.envelope import Message
from abiquo_dc.protocol.monitoring import MonitoredHost, VmStateChanged
from abiquo_dc.settings import VsmSettings
from abiquo_dc.vsm.service import VirtualSystemMonitor
from abiquo_dc.vsm.store import MemoryStore

Client = TestClient[web.Request, web.Application]

HOST = "10.0.0.1"
OTHER = "10.0.0.2"
SECRET = "s3cr3t-passw0rd"
SETTINGS = VsmSettings(
    poll_interval=0.2,
    resync_interval=30.0,
    grace=5.0,
    reconnect_initial=0.05,
    reconnect_max=0.2,
    move_window=0.2,
    check_interval=0.1,
    driver_timeout=2.0,
)


@dataclass
class Vsm:
    service: VirtualSystemMonitor
    store: MemoryStore
    cloud: SimulatedCloud
    client: Client
    sent: list[Message] = field(default_factory=list)

    def events(self, vm_uuid: str) -> list[VmStateChanged]:
        return [m for m in self.sent if isinstance(m, VmStateChanged) and m.vm_uuid == vm_uuid]


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 (monitors and the sender announce nothing)
            await asyncio.sleep(0.01)


@pytest.fixture
async def vsm(tmp_path: Path) -> AsyncIterator[Vsm]:
    cloud = SimulatedCloud()
    cloud.add_host(HOST)
    cloud.add_host(OTHER)
    store = MemoryStore()
    bus = Bus(name="test.bus")
    sent: list[Message] = []

    async def publish(message: Message) -> None:
        sent.append(message)

    def opener(c: HypervisorConnection) -> Driver:
        return SimulatorDriver(c, cloud=cloud, timeout=2.0)

    service = VirtualSystemMonitor(
        bus=bus,
        dc_uuid="dc-1",
        store=lambda: store,
        opener=opener,
        publish=publish,
        state_dir=tmp_path,
        settings=SETTINGS,
    )
    await service.start()
    try:
        await service.wait_running(5)
        app = web.Application()
        app.add_routes(service.all_routes())
        async with TestClient(TestServer(app)) as client:
            yield Vsm(service, store, cloud, client, sent)
    finally:
        await service.stop()
        await bus.close()
        await cloud.close()


def kvm(address: str = HOST, **more: Any) -> dict[str, Any]:
    return {"address": address, "type": "KVM", "user": "root", "password": SECRET, **more}


def add_vm(host: SimulatedHost, name: str, power: PowerState = PowerState.ON) -> str:
    uuid = f"uuid-{name}"
    host.add_vm(VirtualMachineDefinition(uuid=uuid, name=name, cpu=1, ram_mb=128), power)
    return uuid


async def assert_error(response: Any, status: int, code: str, *fragments: str) -> str:
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    error = await response.json()
    assert set(error) == {"code", "message"}
    assert error["code"] == code
    for fragment in fragments:
        assert fragment in error["message"]
    return str(error["message"])


# -- the check ---------------------------------------------------------------------------


async def test_the_check_answers_while_running(vsm: Vsm) -> None:
    response = await vsm.client.get("/vsm/check")
    assert response.status == 200


# -- physical machines ---------------------------------------------------------------------


async def test_a_posted_host_is_monitored_and_listed_without_credentials(vsm: Vsm) -> None:
    response = await vsm.client.post("/vsm/physicalmachines", json=kvm())
    assert response.status == 201
    assert response.headers["Location"] == f"/vsm/physicalmachines/{HOST}"
    text = await response.text()
    assert SECRET not in text and "root" not in text
    assert await response.json() == {"address": HOST, "type": "KVM", "port": None}

    # Its monitor runs and reaches the host.
    assert list(vsm.service.monitors) == [HOST]
    monitor = vsm.service.monitors[HOST]
    await eventually(lambda: monitor.connected)
    assert monitor.host.credentials.password == SECRET
    # The store keeps the credentials, encrypted.
    [blob] = (await vsm.store.hosts()).values()
    assert SECRET.encode() not in blob

    response = await vsm.client.get("/vsm/physicalmachines")
    assert response.status == 200
    text = await response.text()
    assert SECRET not in text and "root" not in text and "credentials" not in text
    assert await response.json() == [{"address": HOST, "type": "KVM", "port": None}]


async def test_a_host_in_the_query_as_abiquo_sent_it(vsm: Vsm) -> None:
    query = {"address": HOST, "type": "kvm", "user": "root", "password": SECRET, "port": "8889"}
    response = await vsm.client.post("/vsm/physicalmachines", params=query)
    assert response.status == 201
    assert SECRET not in await response.text()
    assert await response.json() == {"address": HOST, "type": "KVM", "port": 8889}
    host = vsm.service.monitors[HOST].host
    assert (host.port, host.credentials.user, host.credentials.password) == (8889, "root", SECRET)

    response = await vsm.client.get("/vsm/physicalmachines")
    assert await response.json() == [{"address": HOST, "type": "KVM", "port": 8889}]


async def test_a_host_posted_again_is_monitored_with_what_was_sent_last(vsm: Vsm) -> None:
    assert (await vsm.client.post("/vsm/physicalmachines", json=kvm())).status == 201
    first = vsm.service.monitors[HOST]
    response = await vsm.client.post("/vsm/physicalmachines", json=kvm(port=16509))
    assert response.status == 201
    assert vsm.service.monitors[HOST] is not first
    response = await vsm.client.get("/vsm/physicalmachines")
    assert await response.json() == [{"address": HOST, "type": "KVM", "port": 16509}]


async def test_a_host_posted_twice_at_once_has_one_monitor(vsm: Vsm) -> None:
    assert (await vsm.client.post("/vsm/physicalmachines", json=kvm())).status == 201
    await eventually(lambda: vsm.service.monitors[HOST].connected)
    hosts = [MonitoredHost(address=HOST, type=HypervisorType.KVM, port=p) for p in (1, 2)]
    await asyncio.gather(*(vsm.service.monitor_host(h) for h in hosts))
    running = [n for n in vsm.service.tasks.running() if n.endswith(f"monitor:{HOST}")]
    assert len(running) == 1, running


async def test_deleting_a_host_stops_its_monitor(vsm: Vsm) -> None:
    for address in (HOST, OTHER):
        assert (await vsm.client.post("/vsm/physicalmachines", json=kvm(address))).status == 201
    monitor = vsm.service.monitors[HOST]
    await eventually(lambda: monitor.connected)

    response = await vsm.client.delete(f"/vsm/physicalmachines/{HOST}")
    assert response.status == 204
    assert list(vsm.service.monitors) == [OTHER]
    assert not monitor.connected
    assert list(await vsm.store.hosts()) == [OTHER]
    response = await vsm.client.get("/vsm/physicalmachines")
    assert [h["address"] for h in await response.json()] == [OTHER]

    response = await vsm.client.delete(f"/vsm/physicalmachines/{HOST}")
    await assert_error(response, 404, "VSM-HOST-NOT-FOUND", HOST)


BAD_HOSTS: dict[str, tuple[bytes, str]] = {
    "not json": (b'{"address": "10.0.0.1", "type": ', "not JSON"),
    "not an object": (b'["10.0.0.1", "KVM"]', "Expected `object`"),
    "unknown type": (b'{"address": "10.0.0.1", "type": "QEMU"}', "unknown hypervisor type"),
    "no type": (b'{"address": "10.0.0.1"}', "`type`"),
    "no address": (b'{"type": "KVM"}', "`address`"),
    "empty address": (b'{"address": "", "type": "KVM"}', "needs an address"),
    "bad address": (b'{"address": "10.0.0.1/24", "type": "KVM"}', "no IP address"),
    "numeric name": (b'{"address": "10.0.0.300", "type": "KVM"}', "no IP address"),
    "spaces": (b'{"address": " 10.0.0.1", "type": "KVM"}', "no IP address"),
    "port zero": (b'{"address": "10.0.0.1", "type": "KVM", "port": 0}', "out of range"),
    "port too big": (b'{"address": "10.0.0.1", "type": "KVM", "port": 65536}', "out of range"),
    "port negative": (b'{"address": "10.0.0.1", "type": "KVM", "port": -1}', "out of range"),
    "port as text": (b'{"address": "10.0.0.1", "type": "KVM", "port": "22"}', "`$.port`"),
    "address a number": (b'{"address": 10, "type": "KVM"}', "`$.address`"),
    "password a number": (
        b'{"address": "10.0.0.1", "type": "KVM", "password": 1}',
        "`$.password`",
    ),
    "unknown field": (
        b'{"address": "10.0.0.1", "type": "KVM", "credentials": {"user": "root"}}',
        "credentials",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_HOSTS))
async def test_a_bad_host_body_is_refused_and_nothing_monitored(vsm: Vsm, case: str) -> None:
    body, fragment = BAD_HOSTS[case]
    response = await vsm.client.post(
        "/vsm/physicalmachines", data=body, headers={"Content-Type": "application/json"}
    )
    await assert_error(response, 400, "GEN-1", fragment)
    assert vsm.service.monitors == {}
    assert await vsm.store.hosts() == {}


BAD_QUERIES: dict[str, tuple[dict[str, str], str]] = {
    "nothing": ({}, "needs an address"),
    "no address": ({"type": "KVM"}, "needs an address"),
    "no type": ({"address": HOST}, "unknown hypervisor type"),
    "unknown type": ({"address": HOST, "type": "QEMU"}, "unknown hypervisor type"),
    "port not a number": ({"address": HOST, "type": "KVM", "port": "ssh"}, "not a number"),
    "port zero": ({"address": HOST, "type": "KVM", "port": "0"}, "out of range"),
    "port too big": ({"address": HOST, "type": "KVM", "port": "70000"}, "out of range"),
}


@pytest.mark.parametrize("case", sorted(BAD_QUERIES))
async def test_a_bad_host_query_is_refused_and_nothing_monitored(vsm: Vsm, case: str) -> None:
    query, fragment = BAD_QUERIES[case]
    response = await vsm.client.post("/vsm/physicalmachines", params=query)
    await assert_error(response, 400, "GEN-1", fragment)
    assert vsm.service.monitors == {}
    assert await vsm.store.hosts() == {}


async def test_a_host_in_both_body_and_query_is_refused(vsm: Vsm) -> None:
    response = await vsm.client.post(
        "/vsm/physicalmachines", json=kvm(), params={"address": OTHER, "type": "KVM"}
    )
    await assert_error(response, 400, "GEN-1", "not both")
    assert vsm.service.monitors == {}


async def test_an_error_message_never_holds_the_password(vsm: Vsm) -> None:
    response = await vsm.client.post("/vsm/physicalmachines", json=kvm(type="QEMU"))
    message = await assert_error(response, 400, "GEN-1")
    assert SECRET not in message


async def test_a_host_name_is_an_address_too(vsm: Vsm) -> None:
    response = await vsm.client.post("/vsm/physicalmachines", json=kvm("kvm-01.example.net"))
    assert response.status == 201
    assert response.headers["Location"] == "/vsm/physicalmachines/kvm-01.example.net"
    response = await vsm.client.delete("/vsm/physicalmachines/kvm-01.example.net")
    assert response.status == 204


# -- subscriptions -------------------------------------------------------------------------


async def test_subscriptions_are_made_listed_and_removed(vsm: Vsm) -> None:
    one = {"vm_uuid": "u-1", "vm_name": "one", "host": HOST}
    response = await vsm.client.post("/vsm/subscriptions", json=one)
    assert response.status == 201
    assert await response.json() == {"count": 1}

    more = [
        {"vm_uuid": "u-2", "host": HOST, "state": "OFF"},
        {"vm_uuid": "u-3", "vm_name": "three", "host": OTHER, "state": "ON"},
    ]
    response = await vsm.client.post("/vsm/subscriptions", json=more)
    assert response.status == 201
    assert await response.json() == {"count": 2}

    response = await vsm.client.get("/vsm/subscriptions")
    assert response.status == 200
    listed = sorted(await response.json(), key=lambda s: s["vm_uuid"])
    assert listed == [
        {"vm_uuid": "u-1", "vm_name": "one", "host": HOST, "state": None},
        {"vm_uuid": "u-2", "vm_name": "", "host": HOST, "state": "OFF"},
        {"vm_uuid": "u-3", "vm_name": "three", "host": OTHER, "state": "ON"},
    ]

    assert (await vsm.client.delete("/vsm/subscriptions/u-1")).status == 204
    response = await vsm.client.delete("/vsm/subscriptions/u-1")
    await assert_error(response, 404, "VSM-NOT-SUBSCRIBED", "u-1")

    # Several at once: one of them subscribed is enough.
    response = await vsm.client.delete("/vsm/subscriptions", json=["u-1", "u-2", "u-3"])
    assert response.status == 204
    assert await (await vsm.client.get("/vsm/subscriptions")).json() == []
    response = await vsm.client.delete("/vsm/subscriptions", json=["u-2", "u-3"])
    await assert_error(response, 404, "VSM-NOT-SUBSCRIBED")


BAD_SUBSCRIPTIONS: dict[str, tuple[bytes, str]] = {
    "empty": (b"", "a subscription or a JSON list"),
    "not json": (b'{"vm_uuid": "u-1",', "not JSON"),
    "empty list": (b"[]", "no subscriptions"),
    "not an object": (b'"u-1"', "Expected `object | array`"),
    "no uuid": (b'{"host": "10.0.0.1"}', "`vm_uuid`"),
    "empty uuid": (b'{"vm_uuid": "", "host": "10.0.0.1"}', "needs a VM uuid"),
    "no host": (b'{"vm_uuid": "u-1"}', "`host`"),
    "empty host": (b'{"vm_uuid": "u-1", "host": ""}', "needs a host"),
    "bad host": (b'{"vm_uuid": "u-1", "host": "10.0.0.1/8"}', "no IP address"),
    "bad state": (b'{"vm_uuid": "u-1", "host": "10.0.0.1", "state": "RUNNING"}', "`$.state`"),
    "uuid a number": (b'{"vm_uuid": 1, "host": "10.0.0.1"}', "`$.vm_uuid`"),
    "unknown field": (b'{"vm_uuid": "u-1", "host": "10.0.0.1", "vmUuid": "u"}', "vmUuid"),
    # One bad item in a list: none of the list is applied.
    "one bad of two": (
        b'[{"vm_uuid": "u-1", "host": "10.0.0.1"}, {"vm_uuid": "u-2"}]',
        "`$[1]`",
    ),
    "twice": (
        b'[{"vm_uuid": "u-1", "host": "10.0.0.1"}, {"vm_uuid": "u-1", "host": "10.0.0.2"}]',
        "twice",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_SUBSCRIPTIONS))
async def test_a_bad_subscription_is_refused_and_nothing_subscribed(vsm: Vsm, case: str) -> None:
    body, fragment = BAD_SUBSCRIPTIONS[case]
    response = await vsm.client.post(
        "/vsm/subscriptions", data=body, headers={"Content-Type": "application/json"}
    )
    await assert_error(response, 400, "GEN-1", fragment)
    assert await vsm.store.subscriptions() == []


BAD_UUID_LISTS: dict[str, tuple[bytes, str]] = {
    "empty": (b"", "a JSON list of VM uuids"),
    "not json": (b'["u-1"', "not JSON"),
    "not a list": (b'{"vm_uuid": "u-1"}', "Expected `array`"),
    "empty list": (b"[]", "no VM uuids"),
    "a number": (b'["u-1", 2]', "`$[1]`"),
    "an empty uuid": (b'["u-1", ""]', "empty"),
}


@pytest.mark.parametrize("case", sorted(BAD_UUID_LISTS))
async def test_a_bad_unsubscription_is_refused_and_nothing_removed(vsm: Vsm, case: str) -> None:
    await vsm.client.post("/vsm/subscriptions", json={"vm_uuid": "u-1", "host": HOST})
    body, fragment = BAD_UUID_LISTS[case]
    response = await vsm.client.delete(
        "/vsm/subscriptions", data=body, headers={"Content-Type": "application/json"}
    )
    await assert_error(response, 400, "GEN-1", fragment)
    assert [s.vm_uuid for s in await vsm.store.subscriptions()] == ["u-1"]


# -- republish and invalidate --------------------------------------------------------------


async def watched(vsm: Vsm, name: str) -> str:
    """A VM ON on HOST, the host monitored and the VM subscribed over HTTP; its first
    event sent."""
    uuid = add_vm(vsm.cloud.host(HOST), name)
    assert (await vsm.client.post("/vsm/physicalmachines", json=kvm())).status == 201
    subscription = {"vm_uuid": uuid, "vm_name": name, "host": HOST}
    assert (await vsm.client.post("/vsm/subscriptions", json=subscription)).status == 201
    await eventually(lambda: len(vsm.events(uuid)) == 1)
    [event] = vsm.events(uuid)
    assert (event.event.value, event.host, event.state.value) == ("POWER_ON", HOST, "ON")
    return uuid


async def test_republish_sends_the_state_again(vsm: Vsm) -> None:
    uuid = await watched(vsm, "web")
    response = await vsm.client.get(f"/vsm/physicalmachines/{HOST}/virtualmachine/web")
    assert response.status == 204
    await eventually(lambda: len(vsm.events(uuid)) == 2)
    again = vsm.events(uuid)[1]
    assert (again.event.value, again.host, again.state.value) == ("POWER_ON", HOST, "ON")
    assert again.sequence > vsm.events(uuid)[0].sequence

    # The VM may be named by its uuid too.
    response = await vsm.client.get(f"/vsm/physicalmachines/{HOST}/virtualmachine/{uuid}")
    assert response.status == 204
    await eventually(lambda: len(vsm.events(uuid)) == 3)


async def test_republish_of_a_vm_not_subscribed_there_is_not_found(vsm: Vsm) -> None:
    await watched(vsm, "web")
    for path in (f"{HOST}/virtualmachine/nope", f"{OTHER}/virtualmachine/web"):
        response = await vsm.client.get(f"/vsm/physicalmachines/{path}")
        await assert_error(response, 404, "GEN-2")


async def test_a_vm_not_seen_yet_is_republished_once_its_host_says(vsm: Vsm) -> None:
    # Subscribed on a host not monitored: nothing known of it, nothing to send yet.
    subscription = {"vm_uuid": "u-9", "vm_name": "later", "host": OTHER}
    assert (await vsm.client.post("/vsm/subscriptions", json=subscription)).status == 201
    response = await vsm.client.get(f"/vsm/physicalmachines/{OTHER}/virtualmachine/later")
    assert response.status == 204
    await asyncio.sleep(0.1)
    assert vsm.events("u-9") == []


async def test_invalidate_makes_the_next_state_news(vsm: Vsm) -> None:
    uuid = await watched(vsm, "db")
    response = await vsm.client.delete(f"/vsm/physicalmachines/{HOST}/virtualmachine/db")
    assert response.status == 204
    # What was known is forgotten, the host listed again: its state is sent as news.
    await eventually(lambda: len(vsm.events(uuid)) == 2)
    assert vsm.events(uuid)[1].event.value == "POWER_ON"

    response = await vsm.client.delete(f"/vsm/physicalmachines/{HOST}/virtualmachine/nope")
    await assert_error(response, 404, "GEN-2")


# -- a VSM that is not running -------------------------------------------------------------


async def test_every_route_answers_503_while_the_vsm_is_stopped(vsm: Vsm) -> None:
    assert (await vsm.client.post("/vsm/physicalmachines", json=kvm())).status == 201
    await vsm.service.stop()

    assert (await vsm.client.get("/vsm/check")).status == 503
    c = vsm.client
    for response in (
        await c.get("/vsm/physicalmachines"),
        await c.post("/vsm/physicalmachines", json=kvm(OTHER)),
        await c.post("/vsm/physicalmachines", params={"address": OTHER, "type": "KVM"}),
        await c.delete(f"/vsm/physicalmachines/{HOST}"),
        await c.get(f"/vsm/physicalmachines/{HOST}/virtualmachine/web"),
        await c.delete(f"/vsm/physicalmachines/{HOST}/virtualmachine/web"),
        await c.get("/vsm/subscriptions"),
        await c.post("/vsm/subscriptions", json={"vm_uuid": "u-1", "host": HOST}),
        await c.delete("/vsm/subscriptions/u-1"),
        await c.delete("/vsm/subscriptions", json=["u-1"]),
    ):
        await assert_error(response, 503, "VSM-STOPPED")
    # Bad input is still bad input.
    response = await c.post("/vsm/physicalmachines", json={"type": "KVM"})
    await assert_error(response, 400, "GEN-1")
