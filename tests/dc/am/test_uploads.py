"""Templates uploaded as multipart, the files served to hypervisors, formats and deletion."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from abiquo_dc.am.ovf import parse_envelope
from abiquo_dc.protocol.templates import TemplateStatus
from abiquo_dc.settings import AmSettings
from tests.dc.am.harness import FAST, Am, AmRunner, in_thread, make_disk
from tests.dc.am.harness import am as am
from tests.dc.am.harness import runner as runner
from tests.dc.am.test_downloads import _settings_dict, assert_error, template_url, templates_url

INFO = {
    "name": "My appliance",
    "description": "made by hand",
    "disk_format": "QCOW2_SPARSE",
    "cpu": 2,
    "ram_mb": 1024,
    "hd_bytes": 1024**3,
    "category": "Tools",
    "icon_url": "http://icons.example/mine.png",
}


def form(
    info: dict[str, Any] | bytes | None,
    disk: bytes | AsyncIterator[bytes] | None,
    *,
    filename: str = "disk.qcow2",
    info_name: str = "diskInfo",
    disk_name: str = "diskFile",
    extra: bool = False,
) -> aiohttp.MultipartWriter:
    writer = aiohttp.MultipartWriter("form-data")
    if info is not None:
        part = (
            writer.append(info, {"Content-Type": "application/json"})
            if isinstance(info, bytes)
            else writer.append_json(info)
        )
        part.set_content_disposition("form-data", name=info_name)
    if disk is not None:
        part = writer.append(disk, {"Content-Type": "application/octet-stream"})
        part.set_content_disposition("form-data", name=disk_name, filename=filename)
    if extra:
        part = writer.append("more")
        part.set_content_disposition("form-data", name="other")
    return writer


async def upload(am: Am, body: aiohttp.MultipartWriter, enterprise: str = "1") -> Any:
    return await am.client.post(templates_url(enterprise), data=body)


def leftovers(am: Am) -> list[str]:
    return am.incoming() + am.template_dirs()


async def test_an_upload_is_a_template_served_to_hypervisors(am: Am, tmp_path: Path) -> None:
    disk = await make_disk(tmp_path / "source.qcow2", data_mib=3)
    data = await in_thread(disk.read_bytes)
    response = await upload(am, form(INFO, data, filename="C:\\images\\my disk.qcow2"))
    assert response.status == 201, await response.text()
    state = await response.json()
    assert state["status"] == "DOWNLOAD"
    ovf_id = state["ovf_id"]
    dir_name = state["dir_name"]
    assert ovf_id == f"{dir_name}/My_appliance.ovf"
    assert response.headers["Location"] == f"/am/erepos/1/templates/{quote(ovf_id, safe='')}"
    template = state["template"]
    assert template["disk_path"] == f"1/{dir_name}/my_disk.qcow2"
    assert template["disk_format"] == "QCOW2_SPARSE"
    assert template["disk_file_size"] == len(data)
    assert template["virtual_size"] == 64 * 1024**2
    assert (template["cpu"], template["ram_mb"], template["hd_bytes"]) == (2, 1024, 1024**3)
    assert (template["category"], template["icon_url"]) == ("Tools", INFO["icon_url"])

    # On disk: the disk, an envelope that describes it, the record; nothing in staging.
    directory = am.repository / "1" / dir_name
    assert sorted(p.name for p in directory.iterdir()) == [
        "My_appliance.ovf",
        "my_disk.qcow2",
        "template.json",
    ]
    envelope = parse_envelope((directory / "My_appliance.ovf").read_bytes())
    assert (envelope.name, envelope.description, envelope.cpu, envelope.ram_mb) == (
        "My appliance",
        "made by hand",
        2,
        1024,
    )
    assert envelope.files[0].size == len(data)
    assert am.incoming() == []

    # Central was told: DOWNLOADING, then DOWNLOAD with the template.
    await asyncio.sleep(0.05)
    assert am.statuses(ovf_id)[0] is TemplateStatus.DOWNLOADING
    assert am.statuses(ovf_id)[-1] is TemplateStatus.DOWNLOAD

    # The disk is served whole and by ranges.
    file_url = f"/am/files/{template['disk_path']}"
    response = await am.client.get(file_url)
    assert response.status == 200 and await response.read() == data
    response = await am.client.get(file_url, headers={"Range": "bytes=100-199"})
    assert response.status == 206 and await response.read() == data[100:200]
    response = await am.client.head(file_url)
    assert response.status == 200 and int(response.headers["Content-Length"]) == len(data)
    for bad in (
        "/am/files/1/../../etc/passwd",
        "/am/files/1/.incoming/x/y",
        f"/am/files/1/{dir_name}/nothing",
        "/am/files/.abiquo_repository",
        "/am/files/%2e%2e/etc/passwd",
    ):
        response = await am.client.get(bad)
        assert response.status == 404, bad

    # The disk in its own format, and in one the BPM has not made (yet).
    response = await am.client.get(template_url(ovf_id), params={"format": "qcow2_sparse"})
    assert (await response.json())["disk_path"] == template["disk_path"]
    response = await am.client.get(template_url(ovf_id), params={"format": "RAW"})
    await assert_error(response, 404, "AM-TEMPLATE-NOT-FOUND", "RAW")
    converted = directory / "formats" / "RAW"
    await in_thread(lambda: converted.mkdir(parents=True))
    await in_thread((converted / "my_disk.raw").write_bytes, b"\0" * 4096)
    response = await am.client.get(template_url(ovf_id), params={"format": "RAW"})
    view = await response.json()
    assert view == {
        "ovf_id": ovf_id,
        "format": "RAW",
        "disk_path": f"1/{dir_name}/formats/RAW/my_disk.raw",
        "disk_file_size": 4096,
        "url": f"/am/files/1/{dir_name}/formats/RAW/my_disk.raw",
    }
    response = await am.client.get(template_url(ovf_id), params={"format": "FLOPPY"})
    await assert_error(response, 400, "GEN-1", "FLOPPY")

    # Deleted: gone from disk and from the listing, and central is told.
    response = await am.client.delete(template_url(ovf_id))
    assert response.status == 204
    assert leftovers(am) == []
    response = await am.client.get(templates_url())
    assert await response.json() == []
    await asyncio.sleep(0.05)
    assert am.statuses(ovf_id)[-1] is TemplateStatus.NOT_DOWNLOAD


async def test_a_disk_that_is_not_what_it_is_declared(am: Am, tmp_path: Path) -> None:
    disk = await make_disk(tmp_path / "source.img", fmt="raw", data_mib=1, size="4M")
    response = await upload(am, form(INFO, await in_thread(disk.read_bytes)))
    await assert_error(response, 422, "AM-DISK-FORMAT", "QCOW2_SPARSE", "RAW")
    assert leftovers(am) == []
    # The status says so too.
    [state] = await (await am.client.get(templates_url())).json()
    assert state["status"] == "ERROR" and "RAW" in state["error"]


async def test_an_upload_over_the_limit(runner: AmRunner) -> None:
    am = await runner.start(AmSettings(**{**_settings_dict(FAST), "max_upload_bytes": 1024**2}))

    async def stream() -> AsyncIterator[bytes]:
        for _ in range(8):
            yield b"x" * 256 * 1024

    # Sent without a length: refused once the limit is passed.
    response = await upload(am, form(INFO, stream()))
    await assert_error(response, 413, "AM-TOO-BIG")
    assert leftovers(am) == []
    # With a length that says so: refused before a byte of the disk is read.
    response = await upload(am, form(INFO, b"x" * (2 * 1024**2)))
    await assert_error(response, 413, "AM-TOO-BIG")
    assert leftovers(am) == []


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (form(None, b"data"), "diskInfo"),
        (form(INFO, None), "diskFile"),
        (form(b"{not json", b"data"), "JSON"),
        (form({"description": "no name"}, b"data"), "name"),
        (form({**INFO, "cpu": 0}, b"data"), "cpu"),
        (form({**INFO, "name": "a\x01b"}, b"data"), "name"),
        (form({**INFO, "unknown": 1}, b"data"), "unknown"),
        (form({**INFO, "disk_format": "FLOPPY"}, b"data"), "disk_format"),
        (form({**INFO, "icon_url": "javascript:alert(1)"}, b"data"), "icon_url"),
        (form(INFO, b"data", info_name="other"), "diskInfo"),
        (form(INFO, b"data", disk_name="other"), "diskFile"),
        (form({**INFO, "disk_format": None}, b"data", extra=True), "more than"),
    ],
)
async def test_a_malformed_upload(am: Am, body: aiohttp.MultipartWriter, fragment: str) -> None:
    response = await upload(am, body)
    await assert_error(response, 400, "AM-UPLOAD", fragment)
    assert leftovers(am) == []


async def test_a_body_that_is_not_multipart_inside(am: Am) -> None:
    response = await am.client.post(
        templates_url(),
        data=b"--x\r\nContent-Disposition: form-data; name=diskInfo\r\n\r\n{}",
        headers={"Content-Type": "multipart/form-data; boundary=y"},
    )
    await assert_error(response, 400, "AM-UPLOAD")
    response = await am.client.post(
        templates_url(), data=b"abc", headers={"Content-Type": "multipart/form-data"}
    )
    await assert_error(response, 400, "AM-UPLOAD")
    assert leftovers(am) == []


async def test_an_upload_cut_off_by_the_client_leaves_nothing(am: Am) -> None:
    body = form({**INFO, "disk_format": None}, b"\1" * (4 * 1024**2))
    payload = aiohttp.payload.get_payload(body)
    chunks: list[bytes] = []

    class Collect:
        async def write(self, data: bytes) -> None:
            chunks.append(bytes(data))

    await payload.write(Collect())  # type: ignore[arg-type]
    raw = b"".join(chunks)
    assert am.client.server.port is not None
    _, writer = await asyncio.open_connection("127.0.0.1", am.client.server.port)
    head = (
        f"POST /am/erepos/1/templates HTTP/1.1\r\nHost: x\r\n"
        f"Content-Type: {body.content_type}\r\nContent-Length: {len(raw)}\r\n\r\n"
    )
    writer.write(head.encode() + raw[: len(raw) // 2])
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.close()
    await writer.wait_closed()
    async with asyncio.timeout(10):
        while True:
            states = await (await am.client.get(templates_url())).json()
            if states and states[0]["status"] == "ERROR":
                break
            await asyncio.sleep(0.02)
    assert "broke off" in states[0]["error"]
    assert leftovers(am) == []


# -- finding the end of the disk in the stream ---------------------------------------------


class Chunks:
    """A stream that delivers `data` in the pieces given."""

    def __init__(self, data: bytes, cuts: list[int]) -> None:
        points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
        self.pieces = [data[a:b] for a, b in itertools.pairwise(points) if b > a]

    async def readany(self) -> bytes:
        return self.pieces.pop(0) if self.pieces else b""


DELIMITER = b"\r\n--boundary42"


def _without_delimiter(data: bytes) -> bytes:
    while DELIMITER in data:
        data = data.replace(DELIMITER, b"")
    return data


@given(
    disk=(
        st.binary(max_size=300)
        | st.lists(
            st.sampled_from([b"\r", b"\n", b"-", b"--boundary4", b"x", b"\r\n--boundary"])
        ).map(b"".join)
    ).map(_without_delimiter),
    rest=st.binary(max_size=40),
    cuts=st.lists(st.integers(0, 400), max_size=12),
)
@settings(max_examples=400, deadline=None)
async def test_the_disk_ends_exactly_at_the_delimiter(
    disk: bytes, rest: bytes, cuts: list[int]
) -> None:
    from abiquo_dc.am.uploads import _copy_until

    got = bytearray()

    async def write(data: bytes | memoryview) -> None:
        got.extend(data)

    stream = Chunks(disk + DELIMITER + rest, cuts)
    after = await _copy_until(stream, DELIMITER, write)  # type: ignore[arg-type]
    while stream.pieces:
        after += await stream.readany()
    assert bytes(got) == disk
    assert after == rest


async def test_a_stream_that_ends_inside_the_disk() -> None:
    from abiquo_dc.am.errors import BadUpload
    from abiquo_dc.am.uploads import _copy_until

    async def write(data: bytes | memoryview) -> None:
        pass

    with pytest.raises(BadUpload, match="ended"):
        await _copy_until(Chunks(b"abc\r\n--bound", [2, 5]), DELIMITER, write)  # type: ignore[arg-type]
