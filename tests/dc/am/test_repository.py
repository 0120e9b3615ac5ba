"""The repository on disk: instances registered from a VM's disk, templates put in or
taken out by hand and found by a rescan, the mount, and the layout's own rules."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from abiquo_dc.am.errors import RepositoryUnavailable, TemplateConflict
from abiquo_dc.am.ovf import OvfDisk, OvfFile, parse_envelope, render_envelope, safe_relative
from abiquo_dc.am.repository import Repository, download_dir_name, new_dir_name, slug
from abiquo_dc.am.service import ApplianceManager
from abiquo_dc.am.status import MemoryStatusStore
from abiquo_dc.bus import Bus
from abiquo_dc.protocol.messages import ServiceState
from abiquo_dc.protocol.templates import TemplateStatus, TemplateStatusChanged
from abiquo_dc.settings import RepositorySettings
from abiquo_runtime.errors import InvalidInput, NotFound
from tests.dc.am.harness import (
    MARK,
    Am,
    AmRunner,
    eventually,
    in_thread,
    make_disk,
    need_qemu_img,
)
from tests.dc.am.harness import am as am
from tests.dc.am.harness import runner as runner
from tests.dc.am.test_downloads import assert_error, template_url, templates_url


async def place_by_hand(
    root: Path, enterprise: str, dir_name: str, *, broken: bool = False
) -> Path:
    """A template directory as an operator would copy one in: an envelope and its disk."""
    directory = root / enterprise / dir_name
    await in_thread(lambda: directory.mkdir(parents=True))
    disk = await make_disk(directory / "disk.qcow2", data_mib=1)
    size = disk.stat().st_size + (1 if broken else 0)
    document = render_envelope(
        name=f"{dir_name} by hand",
        files=[OvfFile(id="f", href="disk.qcow2", path=safe_relative("disk.qcow2"), size=size)],
        disks=[OvfDisk(disk_id="d", file_id="f", capacity_bytes=None, format=None)],
        cpu=1,
        ram_mb=128,
    )
    await in_thread((directory / "hand.ovf").write_bytes, document)
    return directory


async def test_an_instance_is_registered_from_its_disk(am: Am) -> None:
    directory = am.repository / "1" / "instance-vm42"
    await in_thread(lambda: directory.mkdir(parents=True))
    await make_disk(directory / "vm42-disk0.qcow2", data_mib=1)

    state = await am.service.register_instance("1", "1/instance-vm42/vm42-disk0.qcow2", "vm42 copy")
    assert state.status is TemplateStatus.DOWNLOAD
    assert state.ovf_id == "instance-vm42/vm42-disk0.ovf"
    template = state.template
    assert template is not None
    assert template.disk_path == "1/instance-vm42/vm42-disk0.qcow2"
    assert template.disk_format.value == "QCOW2_SPARSE"
    assert template.virtual_size == 64 * 1024**2
    envelope = parse_envelope((directory / "vm42-disk0.ovf").read_bytes())
    assert envelope.name == "vm42 copy" and envelope.files[0].href == "vm42-disk0.qcow2"
    assert (directory / "template.json").is_file()
    await asyncio.sleep(0.05)
    assert am.statuses(state.ovf_id) == [TemplateStatus.DOWNLOAD]
    last = am.messages[-1]
    assert isinstance(last, TemplateStatusChanged) and last.template == template

    # Asked again (a repeated message): the same answer, nothing sent twice.
    again = await am.service.register_instance("1", str(directory / "vm42-disk0.qcow2"), "x")
    assert again == state
    await asyncio.sleep(0.05)
    assert am.statuses(state.ovf_id) == [TemplateStatus.DOWNLOAD]
    response = await am.client.get(template_url(state.ovf_id))
    assert (await response.json())["status"] == "DOWNLOAD"


@pytest.mark.parametrize(
    "path",
    [
        "1/disk.qcow2",
        "2/instance/disk.qcow2",
        "1/../1/instance/disk.qcow2",
        "1/.incoming/x/disk.qcow2",
        "/etc/passwd",
        "1/instance/sub/disk.qcow2",
    ],
)
async def test_an_instance_must_be_a_file_of_a_template_directory(am: Am, path: str) -> None:
    with pytest.raises(InvalidInput):
        await am.service.register_instance("1", path, "x")


async def test_an_instance_whose_disk_is_not_there(am: Am) -> None:
    with pytest.raises(InvalidInput, match="not there"):
        await am.service.register_instance("1", "1/instance/disk.qcow2", "x")


async def test_a_rescan_finds_what_was_put_in_or_taken_out_by_hand(am: Am) -> None:
    good = await place_by_hand(am.repository, "1", "handmade")
    await place_by_hand(am.repository, "1", "broken", broken=True)
    response = await am.client.post("/am/erepos/1")
    assert response.status == 200, await response.text()
    states = {s["ovf_id"]: s for s in await response.json()}
    assert states["handmade/hand.ovf"]["status"] == "DOWNLOAD"
    assert states["handmade/hand.ovf"]["template"]["disk_path"] == "1/handmade/disk.qcow2"
    assert states["broken/hand.ovf"]["status"] == "ERROR"
    assert "envelope says" in states["broken/hand.ovf"]["error"]
    # Recorded beside it, so the next scan reads that.
    assert (good / "template.json").is_file()
    await asyncio.sleep(0.05)
    assert am.statuses("handmade/hand.ovf") == [TemplateStatus.DOWNLOAD]

    # A rescan that finds the same changes nothing.
    response = await am.client.post("/am/erepos/1")
    await asyncio.sleep(0.05)
    assert am.statuses("handmade/hand.ovf") == [TemplateStatus.DOWNLOAD]

    # Taken out by hand: forgotten, and central is told.
    await in_thread(__import__("shutil").rmtree, good)
    response = await am.client.post("/am/erepos/1")
    assert [s["ovf_id"] for s in await response.json()] == ["broken/hand.ovf"]
    await asyncio.sleep(0.05)
    assert am.statuses("handmade/hand.ovf")[-1] is TemplateStatus.NOT_DOWNLOAD

    # The broken one can be deleted like any other.
    response = await am.client.delete(template_url("broken/hand.ovf"))
    assert response.status == 204
    assert am.template_dirs() == []


async def test_what_is_on_disk_is_known_from_the_start(runner: AmRunner) -> None:
    await place_by_hand(runner.root, "3", "early")
    am = await runner.start()
    await eventually(lambda: am.statuses("early/hand.ovf"))
    response = await am.client.get(templates_url("3"))
    assert [s["status"] for s in await response.json()] == ["DOWNLOAD"]


async def test_an_unmounted_repository_is_waited_for(tmp_path: Path) -> None:
    need_qemu_img()
    root = tmp_path / "nfs"
    root.mkdir()
    bus = Bus(name="test.bus")
    service = ApplianceManager(
        bus=bus,
        dc_uuid="dc",
        repository=RepositorySettings(path=str(root), mark_file=MARK),
        store=MemoryStatusStore,
        backoff=lambda: __import__("abiquo_runtime.backoff").backoff.Backoff(
            initial=0.05, maximum=0.1
        ),
    )
    await service.start()
    try:
        await eventually(lambda: service.state is ServiceState.RETRYING)
        assert "not mounted" in service.reason
        await in_thread((root / MARK).touch)
        await service.wait_running(5)
    finally:
        await service.stop()
        await bus.close()


async def test_without_a_repository_the_am_runs_and_says_so() -> None:
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    bus = Bus(name="test.bus")
    service = ApplianceManager(bus=bus, dc_uuid="dc")
    await service.start()
    try:
        await service.wait_running(5)
        app = web.Application()
        app.add_routes(service.all_routes())
        async with TestClient(TestServer(app)) as client:
            assert (await client.get("/am/check")).status == 200
            await assert_error(await client.get("/am/erepos"), 503, "AM-REPOSITORY")
            await assert_error(
                await client.post("/am/erepos/1/templates", data="http://x/y.ovf"),
                503,
                "AM-REPOSITORY",
            )
        with pytest.raises(RepositoryUnavailable):
            await service.rescan("1")
    finally:
        await service.stop()
        await bus.close()


# -- the layout's rules ------------------------------------------------------------------------


def test_download_directories_are_flat_readable_and_distinct() -> None:
    assert download_dir_name("http://rs.example.com/m0n0wall/m0n0wall-1.3.ovf") == (
        "rs.example.com_m0n0wall_m0n0wall-1.3"
    )
    assert download_dir_name("https://h:8443/a/b.ovf") == "h_8443_a_b"
    odd = download_dir_name("http://h/a b/c.ovf")
    assert odd.startswith("h_a_b_c-") and odd != download_dir_name("http://h/a_b/c.ovf")
    assert download_dir_name("http://h/x.ovf?v=1") != download_dir_name("http://h/x.ovf?v=2")
    assert len(download_dir_name("http://h/" + "x" * 500 + ".ovf")) <= 120
    assert "/" not in download_dir_name("http://h/../../etc/x.ovf")
    assert not download_dir_name("http://h/.hidden.ovf").startswith(".")


def test_names_are_safe() -> None:
    assert slug("../../etc") == "etc"
    assert slug("...") == "template"
    assert slug("a/b\\c d") == "a_b_c_d"
    name = new_dir_name("My VM")
    assert name.startswith("My_VM-") and name != new_dir_name("My VM")


def test_files_served_stay_among_the_templates(tmp_path: Path) -> None:
    repository = Repository(RepositorySettings(path=str(tmp_path)), executor=None)
    assert repository.resolve_file("1/t/disk.img") == tmp_path / "1" / "t" / "disk.img"
    for bad in ("", "1", "1/t", "x/t/d", "1/../t/d", "1/.incoming/k/d", "1/t/.hidden", "/1/t/d"):
        with pytest.raises(NotFound):
            repository.resolve_file(bad)


async def test_a_symbolic_link_is_not_served(tmp_path: Path) -> None:
    repository = Repository(RepositorySettings(path=str(tmp_path)), executor=None)
    directory = tmp_path / "1" / "t"
    directory.mkdir(parents=True)
    (directory / "link").symlink_to("/etc/hostname")
    (directory / "disk").write_bytes(b"x")
    with pytest.raises(NotFound):
        await repository.servable("1/t/link")
    assert await repository.servable("1/t/disk") == directory / "disk"


async def test_a_template_is_moved_into_place_whole_or_not_at_all(tmp_path: Path) -> None:
    repository = Repository(RepositorySettings(path=str(tmp_path)), executor=None)
    staging = await repository.prepare_staging("1", "dl-x", fresh=True)
    (staging / "disk").write_bytes(b"x")
    final = repository.template_dir("1", "t")
    await repository.commit(staging, final)
    assert (final / "disk").read_bytes() == b"x" and not staging.exists()
    other = await repository.prepare_staging("1", "dl-y", fresh=True)
    with pytest.raises(TemplateConflict):
        await repository.commit(other, final)
    assert await repository.remove(final)
    assert not final.exists() and not await repository.remove(final)
    with pytest.raises(InvalidInput):
        repository.template_dir("1", ".incoming")
    with pytest.raises(InvalidInput):
        repository.enterprise_dir("../1")
