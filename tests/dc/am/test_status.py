"""One contract for the AM's status stores: Redis, and the all-in-one's in-process twin."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from abiquo_dc.am.redis_status import RedisStatusStore, StatusUnavailable
from abiquo_dc.am.status import MemoryStatusStore, StatusStore, TemplateState, status_store
from abiquo_dc.protocol.definitions import DiskFormat
from abiquo_dc.protocol.templates import TemplateDefinition, TemplateStatus
from abiquo_dc.settings import RedisSettings
from tests.dc.am.harness import DC, REDIS_URL, forget_redis


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[StatusStore]:
    if request.param == "memory":
        memory = MemoryStatusStore()
        await memory.open()
        yield memory
        await memory.close()
        return
    prefix = request.getfixturevalue("redis_prefix") + f"status-{os.urandom(4).hex()}:"
    real = RedisStatusStore(REDIS_URL, prefix=prefix, dc_uuid=DC)
    await real.open()
    try:
        yield real
    finally:
        await real.close()
        await forget_redis(prefix)


TEMPLATE = TemplateDefinition(
    ovf_id="http://h/a.ovf",
    name="a",
    disk_format=DiskFormat.QCOW2_SPARSE,
    disk_path="1/h_a/a.qcow2",
    disk_file_size=1000,
    virtual_size=64 * 1024**2,
    cpu=2,
    ram_mb=512,
    hd_bytes=64 * 1024**2,
    icon_url="http://h/i.png",
    category="Linux",
)


def state(
    ovf_id: str, status: TemplateStatus = TemplateStatus.DOWNLOADING, **more: object
) -> TemplateState:
    return TemplateState(ovf_id=ovf_id, status=status, dir_name="d", **more)  # type: ignore[arg-type]


async def test_states_are_kept_per_enterprise(store: StatusStore) -> None:
    assert await store.enterprises() == []
    assert await store.all("1") == []
    assert await store.get("1", "x") is None
    await store.put("1", state("http://h/b.ovf", progress=42.5))
    await store.put(
        "1", state("http://h/a.ovf", TemplateStatus.DOWNLOAD, progress=100.0, template=TEMPLATE)
    )
    await store.put("2", state("up/u.ovf", TemplateStatus.ERROR, error="why"))
    assert await store.enterprises() == ["1", "2"]
    assert [s.ovf_id for s in await store.all("1")] == ["http://h/a.ovf", "http://h/b.ovf"]
    got = await store.get("1", "http://h/a.ovf")
    assert got == state(
        "http://h/a.ovf", TemplateStatus.DOWNLOAD, progress=100.0, template=TEMPLATE
    )
    assert await store.get("2", "http://h/a.ovf") is None
    assert (await store.get("2", "up/u.ovf")).error == "why"  # type: ignore[union-attr]


async def test_a_put_replaces_and_a_remove_forgets(store: StatusStore) -> None:
    await store.put("1", state("a", progress=10.0))
    await store.put("1", state("a", progress=20.0))
    assert [s.progress for s in await store.all("1")] == [20.0]
    assert await store.remove("1", "a")
    assert not await store.remove("1", "a")
    assert await store.all("1") == []
    # An enterprise with nothing left is no longer listed.
    assert await store.enterprises() == []


def test_the_factory_picks_the_store_from_the_settings() -> None:
    assert isinstance(status_store(RedisSettings(url=""), "dc")(), MemoryStatusStore)
    made = status_store(RedisSettings(url=REDIS_URL, prefix="p:"), "dc")()
    assert isinstance(made, RedisStatusStore) and made.ns == "p:am:dc:"


async def test_an_unreachable_redis_is_a_temporary_error() -> None:
    store = RedisStatusStore("redis://127.0.0.1:1/0", prefix="x:", dc_uuid=DC)
    with pytest.raises(StatusUnavailable):
        await store.open()
