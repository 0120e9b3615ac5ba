"""The all-in-one's demo template: made once, and taken by the AM as any template."""

from __future__ import annotations

import json
from pathlib import Path

from abiquo_cli.allinone import DEMO_DIR, ensure_demo_template
from abiquo_dc.am.ovf import parse_envelope
from abiquo_dc.protocol.templates import TemplateStatus
from tests.dc.am.harness import AmRunner, eventually, in_thread, need_qemu_img, run
from tests.dc.am.harness import runner as runner


async def test_the_demo_template_is_made_once_and_found_by_the_am(runner: AmRunner) -> None:
    need_qemu_img()
    made = await ensure_demo_template(runner.root)
    assert made == runner.root / "1" / DEMO_DIR
    envelope = parse_envelope((made / f"{DEMO_DIR}.ovf").read_bytes())
    assert envelope.disks[0].capacity_bytes == 64 * 1024**2
    disk = made / f"{DEMO_DIR}.qcow2"
    stamp = disk.stat().st_mtime_ns
    assert await ensure_demo_template(runner.root) == made
    assert disk.stat().st_mtime_ns == stamp
    assert not list((runner.root / "1" / ".incoming").iterdir())

    am = await runner.start()
    ovf_id = f"{DEMO_DIR}/{DEMO_DIR}.ovf"
    await eventually(lambda: am.statuses(ovf_id))
    state = await am.service.template("1", ovf_id)
    assert state.status is TemplateStatus.DOWNLOAD
    assert state.template is not None
    assert state.template.disk_format.value == "QCOW2_SPARSE"
    assert state.template.virtual_size == 64 * 1024**2
    assert state.template.disk_path == f"1/{DEMO_DIR}/{DEMO_DIR}.qcow2"
    await run("qemu-img", "check", "-q", str(disk))
    info = await in_thread(lambda: json.loads((made / "template.json").read_text()))
    assert info["ovf_id"] == ovf_id


async def test_the_all_in_one_hands_its_repository_to_the_datacenter(tmp_path: Path) -> None:
    from abiquo_cli.allinone import AllInOne, AllInOneSettings

    aio = AllInOne(AllInOneSettings(state_dir=str(tmp_path / "state")), admin_password="x")
    assert aio.datacenter.settings.repository.path == str(aio.repository)
    assert aio.repository == (tmp_path / "state" / "repository").resolve()
