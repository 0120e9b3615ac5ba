"""One contract for the VSM's stores: Redis, and the all-in-one's in-process twin."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis

from abiquo_dc.protocol.jobs import ObservedState
from abiquo_dc.protocol.monitoring import Subscription
from abiquo_dc.vsm.redis_store import RedisStore
from abiquo_dc.vsm.store import Known, MemoryStore, VsmStore

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[VsmStore]:
    if request.param == "memory":
        memory = MemoryStore()
        await memory.open()
        yield memory
        await memory.close()
        return
    prefix: str = request.getfixturevalue("redis_prefix")
    real = RedisStore(REDIS_URL, prefix=prefix, dc_uuid="dc-1")
    await real.open()
    yield real
    await real.close()
    client = redis.Redis.from_url(REDIS_URL)
    keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


def sub(uuid: str, host: str = "10.0.0.1") -> Subscription:
    return Subscription(vm_uuid=uuid, vm_name=f"vm-{uuid}", host=host)


async def test_the_epoch_tells_a_fresh_store_from_one_in_use(store: VsmStore) -> None:
    assert not await store.alive()
    await store.mark()
    assert await store.alive()


async def test_hosts_are_kept_as_given(store: VsmStore) -> None:
    await store.put_host("10.0.0.1", b"blob-1")
    await store.put_host("10.0.0.2", b"blob-2")
    await store.put_host("10.0.0.1", b"blob-1b")
    assert await store.hosts() == {"10.0.0.1": b"blob-1b", "10.0.0.2": b"blob-2"}
    assert await store.remove_host("10.0.0.2")
    assert not await store.remove_host("10.0.0.2")
    assert list(await store.hosts()) == ["10.0.0.1"]


async def test_subscriptions_and_what_is_known(store: VsmStore) -> None:
    await store.subscribe([sub("a"), sub("b")])
    assert await store.lookup("a") == (sub("a"), None)
    assert await store.lookup("zz") == (None, None)
    await store.set_known("a", Known(ObservedState.ON, "10.0.0.1"))
    await store.set_known("b", Known(ObservedState.OFF, "10.0.0.1"))
    assert (await store.lookup("a"))[1] == Known(ObservedState.ON, "10.0.0.1")
    assert set(await store.known_on("10.0.0.1")) == {"a", "b"}
    # A move: the VM leaves its old host's index.
    await store.set_known("a", Known(ObservedState.ON, "10.0.0.2"))
    assert set(await store.known_on("10.0.0.1")) == {"b"}
    assert await store.known_on("10.0.0.2") == {"a": Known(ObservedState.ON, "10.0.0.2")}
    await store.forget("b")
    assert await store.known_on("10.0.0.1") == {}
    assert await store.unsubscribe(["a", "nope"]) == 1
    assert await store.lookup("a") == (None, None)
    assert await store.known_on("10.0.0.2") == {}
    assert [s.vm_uuid for s in await store.subscriptions()] == ["b"]


async def test_what_is_published_reaches_the_listener_in_order(store: VsmStore) -> None:
    got: list[bytes] = []
    listening = asyncio.Event()

    async def listen() -> None:
        stream = store.listen()
        first = asyncio.ensure_future(stream.__anext__())
        listening.set()
        got.append(await first)
        async for payload in stream:
            got.append(payload)
            if len(got) == 50:
                return

    reader = asyncio.ensure_future(listen())
    await listening.wait()
    await asyncio.sleep(0.2)  # the subscription reaches Redis
    for i in range(50):
        await store.publish(f"m{i}".encode())
    await asyncio.wait_for(reader, 5)
    assert got == [f"m{i}".encode() for i in range(50)]


async def test_observe_records_for_subscribed_vms_and_says_what_was_known(
    store: VsmStore,
) -> None:
    await store.subscribe([sub("a")])
    on_h1 = Known(ObservedState.ON, "10.0.0.1")
    assert await store.observe("a", on_h1) == (sub("a"), None)
    assert await store.observe("a", Known(ObservedState.OFF, "10.0.0.2")) == (sub("a"), on_h1)
    # Moved: out of the old host's index, into the new one's.
    assert await store.known_on("10.0.0.1") == {}
    assert set(await store.known_on("10.0.0.2")) == {"a"}
    # Nobody subscribed: nothing recorded.
    assert await store.observe("stranger", on_h1) == (None, None)
    assert (await store.lookup("stranger"))[1] is None
