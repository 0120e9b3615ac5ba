"""The VSM inside a whole datacenter, over the real Redis and RabbitMQ: a change made on
a KVM host behind the platform's back reaches central's events queue within a second,
once; RabbitMQ away for ten seconds during a stream of changes loses none of them."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import libvirt
import pytest

from abiquo_central.link import CentralLink
from abiquo_dc.app import Datacenter, build_datacenter
from abiquo_dc.hypervisors.base import PowerState
from abiquo_dc.protocol.definitions import HypervisorType
from abiquo_dc.protocol.jobs import ObservedState
from abiquo_dc.protocol.monitoring import (
    MonitoredHost,
    MonitorHost,
    MonitoringDone,
    Subscribe,
    Subscription,
    VmStateChanged,
)
from abiquo_dc.settings import (
    DatacenterSettings,
    DCSettings,
    RedisSettings,
    SimulatorSettings,
    VsmSettings,
)
from abiquo_dc.vsm.service import VirtualSystemMonitor
from abiquo_runtime.messaging.amqp import AmqpTransport
from abiquo_runtime.settings import HttpSettings, RabbitSettings, ShutdownSettings
from abiquo_runtime.shutdown import run_stages
from tests.dc.hypervisors.kvm_host import KvmHost
from tests.dc.hypervisors.kvm_host import kvm_host as kvm_host
from tests.dc.hypervisors.kvm_host import private_libvirtd as private_libvirtd
from tests.dc.vsm.harness import REDIS_URL, vm
from tests.link.conftest import Received
from tests.tcpproxy import TcpProxy

pytestmark = pytest.mark.rabbitmq

FAST = VsmSettings(
    poll_interval=1.0,
    resync_interval=60.0,
    grace=30.0,
    reconnect_initial=0.1,
    reconnect_max=1.0,
    move_window=0.5,
    check_interval=0.5,
    driver_timeout=5.0,
)


async def start_dc(
    tmp_path: Path, rabbitmq_url: str, redis_prefix: str, *, simulator: bool = False
) -> Datacenter:
    dc_uuid = str(uuid.uuid4())
    settings = DCSettings(
        datacenter=DatacenterSettings(
            uuid=dc_uuid, name="dc-vsm", state_dir=str(tmp_path / "dc"), heartbeat_interval=1
        ),
        http=HttpSettings(host="127.0.0.1", port=0),
        rabbitmq=RabbitSettings(url=rabbitmq_url, publish_timeout=3.0),
        redis=RedisSettings(url=REDIS_URL, prefix=redis_prefix),
        vsm=FAST,
        simulator=SimulatorSettings(enabled=simulator),
        shutdown=ShutdownSettings(drain_timeout=5, close_timeout=5, stop_accepting_timeout=1),
    )
    dc = build_datacenter(
        settings,
        transport=AmqpTransport(
            rabbitmq_url, connection_name=f"test-dc {dc_uuid}", publish_timeout=3.0
        ),
        dc_uuid=dc_uuid,
    )
    await dc.start()
    vsm = vsm_of(dc)
    await vsm.wait_running(10)
    return dc


def vsm_of(dc: Datacenter) -> VirtualSystemMonitor:
    return next(s for s in dc.subsystems if isinstance(s, VirtualSystemMonitor))


@pytest.fixture
async def central(rabbitmq_url: str) -> AsyncIterator[tuple[CentralLink, Received]]:
    received = Received()
    link = CentralLink(
        transport=AmqpTransport(rabbitmq_url, connection_name="test-central vsm"),
        on_message=received.add,
        retry_delay=0.05,
    )
    await link.start()
    await link.accept()
    try:
        yield link, received
    finally:
        await link.close()


def events(received: Received, vm_uuid: str) -> list[VmStateChanged]:
    return [m for m in received.messages if isinstance(m, VmStateChanged) and m.vm_uuid == vm_uuid]


async def test_a_change_behind_the_platforms_back_on_kvm_arrives_within_a_second_once(
    kvm_host: KvmHost,
    central: tuple[CentralLink, Received],
    rabbitmq_url: str,
    redis_prefix: str,
    tmp_path: Path,
) -> None:
    link, received = central
    dc = await start_dc(tmp_path, rabbitmq_url, redis_prefix)
    try:
        host = kvm_host
        address = host.connection.address
        vm_uuid = str(uuid.uuid4())
        xml = (
            f"<domain type='test'><name>oob-{vm_uuid[:8]}</name><uuid>{vm_uuid}</uuid>"
            "<memory unit='MiB'>128</memory><vcpu>1</vcpu><os><type>hvm</type></os></domain>"
        )
        await host.libvirt.call(host.libvirt.conn.defineXML, xml)
        reply = await link.request(
            dc.uuid,
            MonitorHost(
                host=MonitoredHost(address=address, port=host.port, type=HypervisorType.KVM)
            ),
            timeout=10,
        )
        assert isinstance(reply, MonitoringDone)
        await link.request(
            dc.uuid,
            Subscribe(
                subscriptions=[Subscription(vm_uuid=vm_uuid, host=address, state=ObservedState.OFF)]
            ),
            timeout=10,
        )
        monitor = vsm_of(dc).monitors[address]
        async with asyncio.timeout(10):
            while not monitor.connected:  # noqa: ASYNC110 - the monitor signals nothing
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # its first listing is in: the VM is OFF, as believed
        assert events(received, vm_uuid) == []

        def start(conn: libvirt.virConnect) -> None:
            conn.lookupByUUIDString(vm_uuid).create()

        changed = time.monotonic()
        await host.libvirt.call(start, host.libvirt.conn)
        await received.wait_for(lambda _: bool(events(received, vm_uuid)), timeout=5)
        latency = time.monotonic() - changed
        await asyncio.sleep(1.0)
        got = events(received, vm_uuid)
        assert [(e.event.value, e.state.value) for e in got] == [("POWER_ON", "ON")]
        assert latency < 1.0, f"{latency:.3f}s from the change to central"
    finally:
        await run_stages(dc.shutdown_stages())


async def test_rabbitmq_away_for_ten_seconds_loses_no_change(
    central: tuple[CentralLink, Received], rabbitmq_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    link, received = central
    proxy = TcpProxy("127.0.0.1", 5672)
    await proxy.start()
    via_proxy = rabbitmq_url.replace(":5672/", f":{proxy.port}/")
    assert via_proxy != rabbitmq_url
    dc = await start_dc(tmp_path, via_proxy, redis_prefix, simulator=True)
    try:
        assert dc.simulator is not None
        host = dc.simulator.add_host("10.1.0.1")
        vms = [vm() for _ in range(20)]
        for d in vms:
            host.add_vm(d)
        await link.request(
            dc.uuid,
            MonitorHost(host=MonitoredHost(address="10.1.0.1", type=HypervisorType.KVM)),
            timeout=10,
        )
        await link.request(
            dc.uuid,
            Subscribe(
                subscriptions=[
                    Subscription(vm_uuid=d.uuid, host="10.1.0.1", state=ObservedState.OFF)
                    for d in vms
                ]
            ),
            timeout=10,
        )
        await asyncio.sleep(1.0)
        # A stream of changes, one every 100 ms for 13 s; RabbitMQ is away for 10 s of it.
        rng = random.Random(7)
        expected: dict[str, list[str]] = {d.uuid: [] for d in vms}
        state = {d.uuid: PowerState.OFF for d in vms}
        started = time.monotonic()
        cut_at, restored = 1.5, False
        while (elapsed := time.monotonic() - started) < 13.0:
            if elapsed >= cut_at and not proxy.cut_off and not restored:
                proxy.cut()
            if proxy.cut_off and elapsed >= cut_at + 10.0:
                proxy.restore()
                restored = True
            d = rng.choice(vms)
            new = PowerState.OFF if state[d.uuid] is PowerState.ON else PowerState.ON
            host.set_power(d.uuid, new)
            state[d.uuid] = new
            expected[d.uuid].append("POWER_ON" if new is PowerState.ON else "POWER_OFF")
            await asyncio.sleep(0.1)
        assert restored
        total = sum(map(len, expected.values()))

        def all_in(_: object) -> bool:
            return sum(len(events(received, d.uuid)) for d in vms) >= total

        try:
            await received.wait_for(all_in, timeout=60)
        except TimeoutError:
            pytest.fail(
                f"{sum(len(events(received, d.uuid)) for d in vms)} of {total} events arrived"
            )
        await asyncio.sleep(1.0)
        for d in vms:
            got = [e.event.value for e in events(received, d.uuid)]
            # A re-sent event (a publish whose confirm was lost with the connection) has
            # the message id it had: counted once, as central counts it.
            unique = list({e.message_id: e for e in events(received, d.uuid)}.values())
            assert [e.event.value for e in unique] == expected[d.uuid], got
            sequences = [e.sequence for e in unique]
            assert sequences == sorted(sequences)
    finally:
        await run_stages(dc.shutdown_stages())
        await proxy.close()
