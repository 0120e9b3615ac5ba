"""RegisterInstance on the bus: vfactory's way to have a disk it copied back to the
repository made a template of its enterprise."""

from __future__ import annotations

from pathlib import Path

import pytest

from abiquo_dc.am.errors import RepositoryUnavailable
from abiquo_dc.am.service import ApplianceManager
from abiquo_dc.bus import Bus, NoHandler
from abiquo_dc.protocol.definitions import DiskFormat
from abiquo_dc.protocol.jobs import InstanceRegistered, RegisterInstance
from abiquo_dc.protocol.templates import TemplateStatus
from abiquo_runtime.errors import InvalidInput
from tests.dc.am.harness import Am, eventually, in_thread, make_disk
from tests.dc.am.harness import am as am
from tests.dc.am.harness import runner as runner
from tests.dc.am.test_downloads import template_url


async def copied_disk(root: Path, enterprise: str, task: str) -> str:
    """A disk where vfactory's SNAPSHOT puts it: <enterprise>/instance-<task>/disk."""
    directory = root / enterprise / f"instance-{task}"
    await in_thread(lambda: directory.mkdir(parents=True))
    await make_disk(directory / "disk", data_mib=1)
    return f"{enterprise}/instance-{task}/disk"


def register(disk_path: str, enterprise: str = "1") -> RegisterInstance:
    return RegisterInstance(
        enterprise_id=enterprise, disk_path=disk_path, name="golden", description="from vm42"
    )


async def test_a_registered_instance_is_answered_and_announced(am: Am) -> None:
    disk = await copied_disk(am.repository, "1", "t1")
    reply = await am.service.bus.request(register(disk), timeout=30)
    assert isinstance(reply, InstanceRegistered)
    template = reply.template
    assert (template.ovf_id, template.name, template.description) == (
        "instance-t1/disk.ovf",
        "golden",
        "from vm42",
    )
    assert template.disk_path == disk
    assert template.disk_format is DiskFormat.QCOW2_SPARSE
    assert template.virtual_size == 64 * 1024**2
    assert template.disk_file_size == (am.repository / disk).stat().st_size
    # Central hears of it as of any template.
    await eventually(lambda: am.statuses(template.ovf_id) == [TemplateStatus.DOWNLOAD])
    announced = next(m for m in am.messages if m.ovf_id == template.ovf_id)
    assert (announced.enterprise_id, announced.template) == ("1", template)
    response = await am.client.get(template_url(template.ovf_id))
    assert (await response.json())["status"] == "DOWNLOAD"

    # Asked again (a SNAPSHOT run again after a crash): the same answer, no news.
    again = await am.service.bus.request(register(disk), timeout=30)
    assert isinstance(again, InstanceRegistered) and again.template == template
    await am.service.bus.drain(5)
    assert am.statuses(template.ovf_id) == [TemplateStatus.DOWNLOAD]


async def test_a_disk_of_another_enterprise_is_refused(am: Am) -> None:
    disk = await copied_disk(am.repository, "2", "t2")
    with pytest.raises(InvalidInput, match="enterprise 1"):
        await am.service.bus.request(register(disk, enterprise="1"), timeout=30)
    await am.service.bus.drain(5)
    assert all(m.ovf_id != "instance-t2/disk.ovf" for m in am.messages)
    assert not (am.repository / "2" / "instance-t2" / "disk.ovf").exists()


async def test_a_stopped_am_serves_no_registration(am: Am) -> None:
    await am.service.stop()
    with pytest.raises(NoHandler):
        await am.service.bus.request(register("1/instance-t3/disk"), timeout=30)


async def test_without_a_repository_a_registration_says_so(tmp_path: Path) -> None:
    bus = Bus(name="test.bus")
    service = ApplianceManager(bus=bus, dc_uuid="dc-am-test", repository=None)
    await service.start()
    try:
        await service.wait_running(10)
        with pytest.raises(RepositoryUnavailable):
            await bus.request(register("1/instance-t4/disk"), timeout=30)
    finally:
        await service.stop()
        await bus.close()
