"""AnnounceTemplates: central, once it knows the datacenter, asks the AM to tell every
template's state again (what it announced before was dropped)."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from abiquo_dc.am.service import ApplianceManager
from abiquo_dc.am.status import StatusStore
from abiquo_dc.bus import Bus
from abiquo_dc.protocol.templates import AnnounceTemplates, TemplateStatus, TemplateStatusChanged
from tests.dc.am.harness import (
    DC,
    FAST,
    Am,
    AmRunner,
    eventually,
    in_thread,
    make_disk,
    need_qemu_img,
    repository_dir,
)
from tests.dc.am.harness import store_kind as store_kind
from tests.dc.am.test_uploads import INFO, form, upload


@pytest.fixture
async def runner(tmp_path: Path, store_kind: Callable[[], StatusStore]) -> AsyncIterator[AmRunner]:
    need_qemu_img()
    started = AmRunner(await repository_dir(tmp_path), store_kind, FAST)
    try:
        yield started
    finally:
        await started.close()


async def _upload(am: Am, disk: bytes, name: str, enterprise: str) -> str:
    response = await upload(am, form({**INFO, "name": name}, disk), enterprise)
    assert response.status == 201, await response.text()
    ovf_id: str = (await response.json())["ovf_id"]
    return ovf_id


async def test_every_template_is_announced_again_as_the_store_has_it(
    runner: AmRunner, tmp_path: Path
) -> None:
    am = await runner.start()
    data = await in_thread((await make_disk(tmp_path / "source.qcow2", data_mib=1)).read_bytes)
    first = await _upload(am, data, "first", "1")
    second = await _upload(am, data, "second", "1")
    other = await _upload(am, data, "other", "2")
    await eventually(lambda: {m.ovf_id for m in am.messages} >= {first, second, other})
    # Gone from the disk behind the AM's back: still announced as the store has it, for
    # only a rescan (an operator's refresh) looks at the disk.
    gone = am.repository / "1" / (await am.wait_status("1", second, "DOWNLOAD"))["dir_name"]
    await in_thread(shutil.rmtree, gone)
    await am.service.bus.drain(5)
    am.messages.clear()
    reported = len(am.usages)

    reply = await am.service.bus.request(AnnounceTemplates(dc_uuid=DC), timeout=10)

    assert reply is None
    await eventually(lambda: len(am.messages) >= 3)
    await am.service.bus.drain(5)
    assert sorted((m.enterprise_id, m.ovf_id) for m in am.messages) == sorted(
        [("1", first), ("1", second), ("2", other)]
    )
    names = {first: "first", second: "second", other: "other"}
    for message in am.messages:
        state = await am.store.get(message.enterprise_id, message.ovf_id)
        assert state is not None and state.template is not None
        assert message.dc_uuid == DC
        assert (message.status, message.progress, message.template) == (
            TemplateStatus.DOWNLOAD,
            state.progress,
            state.template,
        )
        assert state.template.name == names[message.ovf_id]
    # And how full the repository is, which central did not hear either (at most one
    # debounce later).
    await eventually(lambda: len(am.usages) > reported, timeout=10)


async def test_without_a_repository_nothing_is_announced() -> None:
    bus = Bus(name="test.bus")
    announced: list[TemplateStatusChanged] = []

    async def collect(message: TemplateStatusChanged) -> None:
        announced.append(message)

    bus.subscribe(TemplateStatusChanged, collect)
    service = ApplianceManager(bus=bus, dc_uuid=DC, settings=FAST)
    await service.start()
    try:
        await service.wait_running(5)
        # Taken and answered, not left for a handler that never comes.
        assert await bus.request(AnnounceTemplates(dc_uuid=DC), timeout=5) is None
        await bus.drain(5)
        assert announced == []
    finally:
        await service.stop()
        await bus.close()
