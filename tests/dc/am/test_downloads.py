"""Templates downloaded from a remote server: catalogues, OVF packages, a transfer cut off
and resumed, every way a package can be wrong, stops and restarts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import pytest
from aiohttp import ClientResponse

from abiquo_dc.am.ovf import parse_envelope
from abiquo_dc.am.status import StatusStore
from abiquo_dc.protocol.definitions import DiskFormat
from abiquo_dc.protocol.templates import TemplateStatus
from abiquo_dc.settings import AmSettings
from tests.dc.am.harness import (
    FAST,
    Am,
    AmRunner,
    Remote,
    eventually,
    in_thread,
    make_package,
    need_qemu_img,
    repository_dir,
    sha256,
    write_catalogue,
)
from tests.dc.am.harness import am as am
from tests.dc.am.harness import remote as remote
from tests.dc.am.harness import runner as runner
from tests.dc.am.harness import store_kind as store_kind

D = TemplateStatus.DOWNLOAD
DOWNLOADING = TemplateStatus.DOWNLOADING
ERROR = TemplateStatus.ERROR


def templates_url(enterprise: str = "1") -> str:
    return f"/am/erepos/{enterprise}/templates"


def template_url(ovf_id: str, enterprise: str = "1") -> str:
    return f"{templates_url(enterprise)}/{quote(ovf_id, safe='')}"


async def post_url(am: Am, url: str, enterprise: str = "1") -> tuple[int, dict[str, object]]:
    response = await am.client.post(
        templates_url(enterprise), data=url, headers={"Content-Type": "text/plain"}
    )
    return response.status, await response.json()


async def assert_error(response: object, status: int, code: str, *fragments: str) -> str:
    assert isinstance(response, ClientResponse)
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    error = await response.json()
    assert set(error) == {"code", "message"}
    assert error["code"] == code, error
    for fragment in fragments:
        assert fragment in error["message"], error
    return str(error["message"])


# -- a whole download, with both stores ----------------------------------------------------


async def test_a_catalogued_package_is_downloaded_cut_off_and_resumed(
    tmp_path: Path, remote: Remote, store_kind: Callable[[], StatusStore]
) -> None:
    need_qemu_img()
    runner = AmRunner(await repository_dir(tmp_path), store_kind, FAST)
    try:
        am = await runner.start()
        ubuntu = await make_package(remote, "ubuntu", data_mib=6)
        other = await make_package(remote, "debian", data_mib=1)
        catalogue = await write_catalogue(remote, [ubuntu, other])

        # The catalogue lists both, neither here yet.
        response = await am.client.get(templates_url(), params={"catalogue": catalogue})
        assert response.status == 200, await response.text()
        listed = await response.json()
        assert listed["name"] == "test catalogue"
        assert [(t["ovf_url"], t["status"]) for t in listed["templates"]] == [
            (ubuntu.url, "NOT_DOWNLOAD"),
            (other.url, "NOT_DOWNLOAD"),
        ]

        # The server drops the connection halfway through the disk, once.
        disk_path = f"ubuntu/{ubuntu.disk.name}"
        half = ubuntu.disk.stat().st_size // 2
        remote.cut[disk_path] = half
        status, body = await post_url(am, ubuntu.url)
        assert status == 201, body
        assert body["status"] == "DOWNLOADING"
        done = await am.wait_status("1", ubuntu.url, "DOWNLOAD", "ERROR")
        assert done["status"] == "DOWNLOAD", done

        # Two requests for the disk: the second asked for the rest, with the validator.
        # (What the client library still held when the connection dropped is asked again.)
        first, second = remote.got(disk_path)
        assert "Range" not in first
        start = int(second["Range"].removeprefix("bytes=").removesuffix("-"))
        assert half - 256 * 1024 < start <= half, (start, half)
        assert second["If-Range"].startswith('"')
        # The manifest was there, and its digests matched (else: ERROR).
        assert remote.got("ubuntu/ubuntu.mf")

        template = done["template"]
        dir_name = done["dir_name"]
        stored = am.repository / "1" / dir_name
        assert sha256(stored / ubuntu.disk.name) == sha256(ubuntu.disk)
        assert template["disk_path"] == f"1/{dir_name}/{ubuntu.disk.name}"
        assert template["disk_format"] == "QCOW2_SPARSE"
        assert template["disk_file_size"] == ubuntu.disk.stat().st_size
        assert template["virtual_size"] == 64 * 1024**2
        assert (template["cpu"], template["ram_mb"]) == (2, 512)
        assert template["hd_bytes"] == 64 * 1024**2
        assert template["name"] == "ubuntu template"
        assert template["description"] == "the ubuntu appliance"
        assert template["category"] == "Linux"
        assert template["icon_url"] == "http://icons.example/icon.png"
        assert sorted(p.name for p in stored.iterdir()) == sorted(
            [ubuntu.disk.name, "ubuntu.ovf", "ubuntu.mf", "template.json"]
        )
        parse_envelope((stored / "ubuntu.ovf").read_bytes())
        # Nothing is left in the staging area.
        assert am.incoming() == []

        # Central heard every step, the last with the template.
        await asyncio.sleep(0.05)
        statuses = am.statuses(ubuntu.url)
        assert statuses[0] is DOWNLOADING and statuses[-1] is D, statuses
        last = [m for m in am.messages if m.ovf_id == ubuntu.url][-1]
        assert last.template is not None and last.template.disk_path == template["disk_path"]
        assert last.enterprise_id == "1" and last.dc_uuid == "dc-am-test"

        # The catalogue now shows it there; asking again changes nothing.
        response = await am.client.get(templates_url(), params={"catalogue": catalogue})
        listed = await response.json()
        assert [t["status"] for t in listed["templates"]] == ["DOWNLOAD", "NOT_DOWNLOAD"]
        status, body = await post_url(am, ubuntu.url)
        assert status == 200 and body["status"] == "DOWNLOAD"

        # HEAD says the progress; the listing filters by state.
        response = await am.client.head(template_url(ubuntu.url))
        assert response.status == 200
        assert response.headers["X-Abiquo-Status"] == "DOWNLOAD"
        assert response.headers["X-Abiquo-Progress"] == "100"
        response = await am.client.get(templates_url(), params={"state": "download"})
        assert [t["ovf_id"] for t in await response.json()] == [ubuntu.url]
        response = await am.client.get(templates_url(), params={"state": "ERROR"})
        assert await response.json() == []

        # A restarted AM over the same store knows it still.
        await runner.stop(am)
        am = await runner.start()
        response = await am.client.get(template_url(ubuntu.url))
        assert (await response.json())["status"] == "DOWNLOAD"
    finally:
        await runner.close()


# -- stops, restarts, attempts -------------------------------------------------------------


async def part_size(am: Am) -> int:
    def size() -> int:
        # The download's staging directory comes and goes under us (it is renamed into
        # place, or removed): os.walk skips what vanished, and so does the sum.
        total = 0
        for folder, _, files in os.walk(am.repository / "1" / ".incoming"):
            for name in files:
                if name.endswith(".part"):
                    with contextlib.suppress(FileNotFoundError):
                        total += (Path(folder) / name).stat().st_size
        return total

    return int(await in_thread(size))


async def _at_least(am: Am, size: int) -> bool:
    return await part_size(am) >= size


async def test_a_download_stopped_by_a_restart_resumes_by_itself(
    runner: AmRunner, remote: Remote
) -> None:
    am = await runner.start()
    package = await make_package(remote, "centos", data_mib=6)
    disk_path = f"centos/{package.disk.name}"
    remote.hold[disk_path] = 4 * 1024 * 1024
    status, _ = await post_url(am, package.url)
    assert status == 201
    await eventually(lambda: _at_least(am, 2 * 1024 * 1024))
    # The DC stops mid-transfer: the download is still DOWNLOADING, its part kept.
    await runner.stop(am)
    remote.release()
    assert (await am.store.get("1", package.url)).status is DOWNLOADING  # type: ignore[union-attr]
    assert am.incoming() != []

    am = await runner.start()
    done = await am.wait_status("1", package.url, "DOWNLOAD", "ERROR")
    assert done["status"] == "DOWNLOAD", done
    requests = remote.got(disk_path)
    assert "Range" in requests[-1], requests
    assert int(requests[-1]["Range"].removeprefix("bytes=").removesuffix("-")) >= 2 * 1024**2
    assert sha256(am.repository / "1" / done["dir_name"] / package.disk.name) == sha256(
        package.disk
    )
    assert am.incoming() == []


async def test_a_download_out_of_attempts_is_an_error_and_resumes_when_asked_again(
    am: Am, remote: Remote
) -> None:
    package = await make_package(remote, "alpine", data_mib=4)
    disk_path = f"alpine/{package.disk.name}"
    half = package.disk.stat().st_size // 2
    remote.cut[disk_path] = half
    remote.fail[disk_path] = 503
    status, _ = await post_url(am, package.url)
    assert status == 201
    failed = await am.wait_status("1", package.url, "ERROR")
    assert "503" in failed["error"] and "3 attempts" in failed["error"], failed
    assert len(remote.got(disk_path)) == FAST.download_attempts
    # What came in is kept, out of the templates' sight.
    assert am.incoming() != [] and am.template_dirs() == []
    assert await part_size(am) > 0

    del remote.fail[disk_path]
    status, body = await post_url(am, package.url)
    assert status == 201 and body["status"] == "DOWNLOADING"
    done = await am.wait_status("1", package.url, "DOWNLOAD", "ERROR")
    assert done["status"] == "DOWNLOAD", done
    assert remote.got(disk_path)[-1]["Range"].startswith("bytes=")
    assert am.incoming() == []


async def test_deleting_a_template_being_downloaded_stops_it_and_leaves_nothing(
    am: Am, remote: Remote
) -> None:
    package = await make_package(remote, "held", data_mib=4)
    remote.hold[f"held/{package.disk.name}"] = 2 * 1024 * 1024
    status, _ = await post_url(am, package.url)
    assert status == 201
    async with asyncio.timeout(10):
        await remote.holding.wait()

    response = await am.client.delete(template_url(package.url))
    assert response.status == 204, await response.text()
    remote.release()
    assert (await am.client.get(template_url(package.url))).status == 404
    assert am.incoming() == [] and am.template_dirs() == []
    await asyncio.sleep(0.05)
    assert am.statuses(package.url)[-1] is TemplateStatus.NOT_DOWNLOAD
    assert not [n for n in am.service.tasks.running() if "download" in n]

    response = await am.client.delete(template_url(package.url))
    await assert_error(response, 404, "AM-TEMPLATE-NOT-FOUND")


async def test_downloads_wait_for_a_slot(runner: AmRunner, remote: Remote) -> None:
    am = await runner.start(AmSettings(**{**_settings_dict(FAST), "max_downloads": 1}))
    first = await make_package(remote, "first", data_mib=2)
    second = await make_package(remote, "second", data_mib=1)
    remote.hold[f"first/{first.disk.name}"] = 1024 * 1024
    assert (await post_url(am, first.url))[0] == 201
    async with asyncio.timeout(10):
        await remote.holding.wait()
    assert (await post_url(am, second.url))[0] == 201
    await asyncio.sleep(0.2)
    # The second's envelope was read when it was asked for; its files wait for the slot.
    assert remote.got("second/second.ovf") and not remote.got(f"second/{second.disk.name}")
    remote.release()
    for package in (first, second):
        done = await am.wait_status("1", package.url, "DOWNLOAD", "ERROR")
        assert done["status"] == "DOWNLOAD", done


def _settings_dict(settings: AmSettings) -> dict[str, object]:
    import msgspec

    return msgspec.structs.asdict(settings)


async def test_progress_goes_out_throttled_and_in_order(am: Am, remote: Remote) -> None:
    package = await make_package(remote, "big", data_mib=48, manifest=False)
    assert (await post_url(am, package.url))[0] == 201
    done = await am.wait_status("1", package.url, "DOWNLOAD", "ERROR")
    assert done["status"] == "DOWNLOAD", done
    await asyncio.sleep(0.05)
    mine = [m for m in am.messages if m.ovf_id == package.url]
    progress = [m.progress for m in mine if m.status is DOWNLOADING]
    # At most once a second or every 5 points: a fast download sends about 20.
    assert 1 <= len(progress) <= 22, progress
    assert progress == sorted(progress) and progress[-1] < 100
    assert mine[-1].status is D and mine[-1].progress == 100


# -- what is wrong with a package is an ERROR with its cause, and nothing is left -----------


async def expect_download_error(am: Am, url: str, *fragments: str) -> str:
    status, body = await post_url(am, url)
    assert status == 201, body
    failed = await am.wait_status("1", url, "ERROR", "DOWNLOAD")
    assert failed["status"] == "ERROR", failed
    for fragment in fragments:
        assert fragment in failed["error"], failed
    assert am.incoming() == [] and am.template_dirs() == []
    await asyncio.sleep(0.05)
    last = [m for m in am.messages if m.ovf_id == url][-1]
    assert last.status is ERROR and last.error == failed["error"]
    return str(failed["error"])


async def test_a_disk_that_does_not_match_the_manifest(am: Am, remote: Remote) -> None:
    package = await make_package(remote, "tampered")
    manifest = remote.root / "tampered" / "tampered.mf"
    lines = manifest.read_text().splitlines()
    lines[1] = lines[1][:-64] + "0" * 64
    manifest.write_text("\n".join(lines) + "\n")
    await expect_download_error(am, package.url, "manifest says", package.disk.name)


async def test_an_envelope_named_oddly_is_kept_under_a_plain_name_and_still_checked(
    am: Am, remote: Remote
) -> None:
    package = await make_package(remote, "odd", envelope_stem="my appliance")
    assert package.url.endswith("/odd/my%20appliance.ovf")
    status, body = await post_url(am, package.url)
    assert status == 201, body
    done = await am.wait_status("1", package.url, "DOWNLOAD", "ERROR")
    assert done["status"] == "DOWNLOAD", done
    stored = am.repository / "1" / done["dir_name"]
    assert (stored / "envelope.ovf").read_bytes() == package.envelope.read_bytes()
    assert remote.got("odd/my appliance.mf")

    # Its digest in the manifest is checked under its remote name.
    other = await make_package(remote, "odd2", envelope_stem="my appliance")
    manifest = remote.root / "odd2" / "my appliance.mf"
    lines = manifest.read_text().splitlines()
    lines[0] = lines[0][:-64] + "0" * 64
    manifest.write_text("\n".join(lines) + "\n")
    status, body = await post_url(am, other.url)
    assert status == 201, body
    failed = await am.wait_status("1", other.url, "ERROR", "DOWNLOAD")
    assert failed["status"] == "ERROR" and "manifest says" in failed["error"], failed


async def test_a_disk_bigger_than_declared(am: Am, remote: Remote) -> None:
    package = await make_package(remote, "bigger", manifest=False)
    declared = package.disk.stat().st_size - 4096
    envelope = package.envelope.read_bytes().replace(
        f'ovf:size="{declared + 4096}"'.encode(), f'ovf:size="{declared}"'.encode()
    )
    package.envelope.write_bytes(envelope)
    await expect_download_error(am, package.url, "envelope says", str(declared))


async def test_a_disk_whose_real_format_is_not_the_declared_one(am: Am, remote: Remote) -> None:
    package = await make_package(remote, "liar", fmt="raw", declared=DiskFormat.QCOW2_SPARSE)
    await expect_download_error(am, package.url, "declared QCOW2_SPARSE", "RAW")


async def test_a_missing_disk(am: Am, remote: Remote) -> None:
    package = await make_package(remote, "missing", manifest=False)
    package.disk.unlink()
    await expect_download_error(am, package.url, "404")


async def test_a_disk_over_the_limit(runner: AmRunner, remote: Remote) -> None:
    am = await runner.start(AmSettings(**{**_settings_dict(FAST), "max_upload_bytes": 1024**2}))
    package = await make_package(remote, "huge", data_mib=3, manifest=False)
    await expect_download_error(am, package.url, "over the limit")


async def test_a_disk_over_the_limit_with_no_size_declared(
    runner: AmRunner, remote: Remote
) -> None:
    am = await runner.start(AmSettings(**{**_settings_dict(FAST), "max_upload_bytes": 1024**2}))
    package = await make_package(remote, "unsized", data_mib=3, manifest=False, declared_size=None)
    remote.chunked.add(f"unsized/{package.disk.name}")
    await expect_download_error(am, package.url, "bigger than")


async def test_a_disk_with_a_backing_file(am: Am, remote: Remote, tmp_path: Path) -> None:
    package = await make_package(remote, "backed", manifest=False, declared_size=None)
    secret = tmp_path / "secret.img"
    secret.write_bytes(b"\0" * 1024 * 1024)
    package.disk.unlink()
    from tests.dc.am.harness import run

    await run(
        "qemu-img", "create", "-q", "-f", "qcow2", "-b", str(secret), "-F", "raw", str(package.disk)
    )
    await expect_download_error(am, package.url, "backing file")


# -- bad envelopes and URLs are answered at once -------------------------------------------


async def test_a_reference_out_of_the_template_is_refused(am: Am, remote: Remote) -> None:
    package = await make_package(remote, "escape", href="../escape/x.img", manifest=False)
    response = await am.client.post(
        templates_url(), data=package.url, headers={"Content-Type": "text/plain"}
    )
    await assert_error(response, 422, "AM-OVF", "..")
    state = await am.wait_status("1", package.url, "ERROR")
    assert ".." in state["error"]
    assert am.incoming() == [] and am.template_dirs() == []


async def test_an_envelope_with_entities_is_refused(am: Am, remote: Remote) -> None:
    package = await make_package(remote, "entity", manifest=False)
    document = package.envelope.read_bytes().decode()
    document = document.replace(
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<?xml version="1.0"?><!DOCTYPE Envelope [<!ENTITY x SYSTEM "file:///etc/passwd">]>',
    ).replace("<Name>entity template</Name>", "<Name>&x;</Name>")
    package.envelope.write_text(document)
    response = await am.client.post(
        templates_url(), data=package.url, headers={"Content-Type": "text/plain"}
    )
    await assert_error(response, 422, "AM-OVF")
    assert am.incoming() == [] and am.template_dirs() == []


@pytest.mark.parametrize(
    "url",
    ["file:///etc/passwd", "ftp://example.com/x.ovf", "not a url", "", "http://", "gopher://x"],
)
async def test_only_http_urls_are_downloaded(am: Am, url: str) -> None:
    response = await am.client.post(
        templates_url(), data=url, headers={"Content-Type": "text/plain"}
    )
    await assert_error(response, 400, "AM-URL")


async def test_what_the_remote_answers_instead_of_an_envelope(am: Am, remote: Remote) -> None:
    response = await am.client.post(
        templates_url(), data=remote.url("nothing.ovf"), headers={"Content-Type": "text/plain"}
    )
    await assert_error(response, 422, "AM-REMOTE-NOT-FOUND", "404")
    remote.fail["broken.ovf"] = 500
    response = await am.client.post(
        templates_url(), data=remote.url("broken.ovf"), headers={"Content-Type": "text/plain"}
    )
    await assert_error(response, 502, "AM-DOWNLOAD-INTERRUPTED", "500")
    (remote.root / "large.ovf").write_bytes(b"<" * (FAST.max_document_bytes + 1))
    response = await am.client.post(
        templates_url(), data=remote.url("large.ovf"), headers={"Content-Type": "text/plain"}
    )
    await assert_error(response, 413, "AM-TOO-BIG")
    (remote.root / "text.ovf").write_bytes(b"hello")
    response = await am.client.post(
        templates_url(), data=remote.url("text.ovf"), headers={"Content-Type": "text/plain"}
    )
    await assert_error(response, 422, "AM-OVF")
    # Each is recorded as an ERROR with its cause.
    response = await am.client.get(templates_url(), params={"state": "ERROR"})
    assert len(await response.json()) == 4


async def test_a_bad_body_or_query(am: Am) -> None:
    response = await am.client.post(
        templates_url(), data=b"{}", headers={"Content-Type": "application/json"}
    )
    await assert_error(response, 415, "AM-MEDIA-TYPE")
    response = await am.client.get(templates_url(), params={"state": "BROKEN"})
    await assert_error(response, 400, "GEN-1", "BROKEN")
    response = await am.client.get("/am/erepos/abc/templates")
    await assert_error(response, 400, "GEN-1", "enterprise")
    response = await am.client.get(template_url("nope"))
    await assert_error(response, 404, "AM-TEMPLATE-NOT-FOUND")
    response = await am.client.head(template_url("nope"))
    assert response.status == 404


# -- catalogues ------------------------------------------------------------------------------


async def test_catalogues_only_from_where_allowed(runner: AmRunner, remote: Remote) -> None:
    settings = AmSettings(**{**_settings_dict(FAST), "allowed_catalogues": [remote.url("ok/")]})
    am = await runner.start(settings)
    package = await make_package(remote, "ok")
    url = await write_catalogue(remote, [package])
    response = await am.client.get(templates_url(), params={"catalogue": url})
    await assert_error(response, 400, "AM-CATALOGUE-NOT-ALLOWED")
    await in_thread((remote.root / "ovfindex.xml").rename, remote.root / "ok" / "ovfindex.xml")
    response = await am.client.get(
        templates_url(), params={"catalogue": remote.url("ok/ovfindex.xml")}
    )
    assert response.status == 200, await response.text()
    assert [t["ovf_url"] for t in (await response.json())["templates"]] == [package.url]


async def test_a_catalogue_that_is_not_one(am: Am, remote: Remote) -> None:
    (remote.root / "bad.xml").write_bytes(b"<not-a-catalogue/>")
    response = await am.client.get(templates_url(), params={"catalogue": remote.url("bad.xml")})
    await assert_error(response, 422, "AM-CATALOGUE")
    (remote.root / "evil.xml").write_bytes(
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa">'
        b'<!ENTITY b "&a;&a;&a;">]><r>&b;</r>'
    )
    response = await am.client.get(templates_url(), params={"catalogue": remote.url("evil.xml")})
    await assert_error(response, 422, "AM-CATALOGUE")
    response = await am.client.get(templates_url(), params={"catalogue": "file:///etc/passwd"})
    await assert_error(response, 400, "AM-URL")


async def test_the_enterprise_repository_is_described_and_listed(am: Am, remote: Remote) -> None:
    package = await make_package(remote, "listed")
    assert (await post_url(am, package.url, enterprise="7"))[0] == 201
    await am.wait_status("7", package.url, "DOWNLOAD")
    response = await am.client.get("/am/erepos")
    [repository] = await response.json()
    assert repository["id"] == "7" and repository["templates"] == 1
    assert repository["location"] == str(am.repository / "7")
    assert repository["capacity_mb"] > 0 and repository["used_mb"] >= 4
    response = await am.client.get("/am/erepos/7")
    assert (await response.json())["used_mb"] == repository["used_mb"]
    response = await am.client.get("/am/erepos/8")
    assert (await response.json())["templates"] == 0
    # As JSON, the listing holds what central gets.
    response = await am.client.get(templates_url("7"))
    [state] = json.loads(await response.text())
    assert state["template"]["disk_format"] == "QCOW2_SPARSE"
