"""The Virtual System Monitor over simulated hosts, on Redis and on the in-process store:
moves, lost hosts, a store emptied under it, credentials kept encrypted."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as redis

from abiquo_dc.hypervisors.base import PowerState
from abiquo_dc.protocol.definitions import Credentials, HypervisorType
from abiquo_dc.protocol.jobs import ObservedState
from abiquo_dc.protocol.monitoring import MonitoredHost, Subscription
from abiquo_dc.vsm.store import MemoryStore
from tests.dc.vsm.harness import REDIS_URL, Vsm, kvm, running_vsm, vm


@pytest.fixture(params=["memory", "redis"])
async def vsm(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Vsm]:
    prefix = request.getfixturevalue("redis_prefix") if request.param == "redis" else ""
    async with running_vsm(tmp_path, kind=request.param, prefix=prefix) as running:
        yield running


async def test_a_change_out_of_band_is_sent_once(vsm: Vsm) -> None:
    host = vsm.cloud.add_host("10.0.0.1")
    d = vm()
    host.add_vm(d)
    await vsm.service.monitor_host(kvm("10.0.0.1"))
    await vsm.service.subscribe(
        [Subscription(vm_uuid=d.uuid, vm_name=d.name, host="10.0.0.1", state=ObservedState.OFF)]
    )
    await vsm.quiet(0.3)
    assert vsm.events(d.uuid) == []  # as central believes: nothing to say
    host.set_power(d.uuid, PowerState.ON)
    await vsm.wait_for(lambda: bool(vsm.events(d.uuid)))
    await vsm.quiet()
    assert vsm.events(d.uuid) == [("POWER_ON", "10.0.0.1")]


async def test_a_vm_moved_between_hosts_gives_moved_then_its_state(vsm: Vsm) -> None:
    one, two = vsm.cloud.add_host("10.0.0.1"), vsm.cloud.add_host("10.0.0.2")
    d = vm()
    one.add_vm(d, PowerState.ON)
    for address in ("10.0.0.1", "10.0.0.2"):
        await vsm.service.monitor_host(kvm(address))
    await vsm.service.subscribe([Subscription(vm_uuid=d.uuid, vm_name=d.name, host="10.0.0.1")])
    await vsm.wait_for(lambda: vsm.events(d.uuid) == [("POWER_ON", "10.0.0.1")])
    # A migration: on the new host first, then gone from the old one.
    two.add_vm(d, PowerState.ON)
    one.remove_vm(d.uuid)
    await vsm.wait_for(lambda: len(vsm.events(d.uuid)) >= 3)
    await vsm.quiet(0.6)  # past the move window: no DESTROYED may follow
    assert vsm.events(d.uuid) == [
        ("POWER_ON", "10.0.0.1"),
        ("MOVED", "10.0.0.2"),
        ("POWER_ON", "10.0.0.2"),
    ]


async def test_a_host_away_past_its_grace_makes_its_vms_unknown(vsm: Vsm) -> None:
    host = vsm.cloud.add_host("10.0.0.1")
    on, off = vm(), vm()
    host.add_vm(on, PowerState.ON)
    host.add_vm(off)
    await vsm.service.monitor_host(kvm("10.0.0.1"))
    await vsm.service.subscribe(
        [Subscription(vm_uuid=d.uuid, vm_name=d.name, host="10.0.0.1") for d in (on, off)]
    )
    await vsm.wait_for(lambda: len(vsm.events()) == 2)
    host.disconnect(1.5)  # three times the grace period
    await vsm.wait_for(lambda: len(vsm.events()) == 4)
    assert sorted(vsm.events()[2:]) == [("UNKNOWN", "10.0.0.1")] * 2
    # Back: their true states, never OFF for the one that was on all along.
    await vsm.wait_for(lambda: len(vsm.events()) == 6, timeout=5)
    assert vsm.events(on.uuid) == [
        ("POWER_ON", "10.0.0.1"),
        ("UNKNOWN", "10.0.0.1"),
        ("POWER_ON", "10.0.0.1"),
    ]
    assert vsm.events(off.uuid)[-1] == ("POWER_OFF", "10.0.0.1")


async def test_a_vm_destroyed_behind_our_back_while_we_were_away(vsm: Vsm) -> None:
    host = vsm.cloud.add_host("10.0.0.1")
    d = vm()
    host.add_vm(d, PowerState.ON)
    await vsm.service.monitor_host(kvm("10.0.0.1"))
    await vsm.service.subscribe([Subscription(vm_uuid=d.uuid, host="10.0.0.1")])
    await vsm.wait_for(lambda: len(vsm.events(d.uuid)) == 1)
    host.disconnect(0.3)
    host.remove_vm(d.uuid)  # its event is lost with the stream
    await vsm.wait_for(lambda: ("DESTROYED", "10.0.0.1") in vsm.events(d.uuid), timeout=5)
    await vsm.quiet()
    assert vsm.events(d.uuid) == [("POWER_ON", "10.0.0.1"), ("DESTROYED", "10.0.0.1")]


async def test_an_emptied_store_is_rebuilt_from_central(vsm: Vsm, redis_prefix: str) -> None:
    host = vsm.cloud.add_host("10.0.0.1")
    d = vm()
    host.add_vm(d)
    await vsm.service.monitor_host(kvm("10.0.0.1"))
    subscription = Subscription(vm_uuid=d.uuid, host="10.0.0.1", state=ObservedState.OFF)
    await vsm.service.subscribe([subscription])
    lost_before = vsm.lost()
    if isinstance(vsm.store, MemoryStore):
        vsm.store.flush()
    else:
        client = redis.Redis.from_url(REDIS_URL)
        await client.flushall()
        await client.aclose()
    await vsm.wait_for(lambda: vsm.lost() == lost_before + 1)
    # Meanwhile nothing is known of the VM: its changes go nowhere ...
    host.set_power(d.uuid, PowerState.ON)
    await vsm.quiet(0.3)
    assert vsm.events(d.uuid) == []
    # ... until central sends again what it wants, with what it believes.
    await vsm.service.monitor_host(kvm("10.0.0.1"))
    await vsm.service.subscribe([subscription])
    await vsm.wait_for(lambda: vsm.events(d.uuid) == [("POWER_ON", "10.0.0.1")])
    host.set_power(d.uuid, PowerState.PAUSED)
    await vsm.wait_for(lambda: len(vsm.events(d.uuid)) == 2)
    await vsm.quiet()
    assert vsm.events(d.uuid) == [("POWER_ON", "10.0.0.1"), ("PAUSED", "10.0.0.1")]


async def test_hosts_survive_a_restart_with_their_credentials_encrypted(
    tmp_path: Path, redis_prefix: str
) -> None:
    secret = MonitoredHost(
        address="10.0.0.9",
        type=HypervisorType.KVM,
        credentials=Credentials(user="root", password="s3cr3t-pa55"),
    )
    async with running_vsm(tmp_path, kind="redis", prefix=redis_prefix, keep=True) as first:
        first.cloud.add_host("10.0.0.9")
        await first.service.monitor_host(secret)
        client = redis.Redis.from_url(REDIS_URL)
        stored = b"".join(
            [
                v
                async for k in client.scan_iter(match=f"{redis_prefix}*")
                for v in await _values(client, k)
            ]
        )
        await client.aclose()
        assert b"10.0.0.9" in stored and b"s3cr3t-pa55" not in stored
        assert (tmp_path / "vsm.key").stat().st_mode & 0o777 == 0o600
    # The DC started again on the same Redis and state directory: it monitors the host
    # at once, with its credentials, and does not ask central for anything.
    async with running_vsm(tmp_path, kind="redis", prefix=redis_prefix) as again:
        assert list(again.service.monitors) == ["10.0.0.9"]
        assert again.service.monitors["10.0.0.9"].host.credentials.password == "s3cr3t-pa55"
        assert again.lost() == 0
        assert [h.credentials for h in again.service.hosts()] == [Credentials()]


async def _values(client: redis.Redis, key: bytes) -> list[bytes]:
    kind = await client.type(key)
    if kind == b"hash":
        return [v for pair in (await client.hgetall(key)).items() for v in pair]
    if kind == b"string":
        return [await client.get(key) or b""]
    return []
