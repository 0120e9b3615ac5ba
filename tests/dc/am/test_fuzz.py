"""Whatever is POSTed to the AM, and whatever a remote server serves as an envelope or a
catalogue, the answer is a clear error or a success: never a 500, never a crash."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from abiquo_dc.am.catalogue import CatalogueEntry, render_catalogue
from abiquo_dc.am.ovf import OvfDisk, OvfFile, render_envelope, safe_relative
from abiquo_dc.protocol.definitions import DiskFormat
from tests.dc.am.harness import Am, Remote, eventually
from tests.dc.am.harness import am as am
from tests.dc.am.harness import remote as remote
from tests.dc.am.harness import runner as runner
from tests.dc.am.test_downloads import templates_url

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)

CONTENT_TYPES = st.sampled_from(
    [
        "text/plain",
        "text/uri-list",
        "multipart/form-data; boundary=b",
        "multipart/form-data",
        "multipart/form-data; boundary=",
        'multipart/form-data; boundary="a b"',
        "multipart/mixed; boundary=b",
        "application/octet-stream",
        "application/json",
        "",
    ]
)

ENVELOPE = render_envelope(
    name="fuzzed",
    description="an envelope",
    files=[OvfFile(id="f", href="d.img", path=safe_relative("d.img"), size=10)],
    disks=[OvfDisk(disk_id="d", file_id="f", capacity_bytes=1024, format=None)],
    cpu=1,
    ram_mb=64,
)


CATALOGUE = render_catalogue(
    "fuzzed",
    [
        CatalogueEntry(
            ovf_url="http://example.com/a/a.ovf",
            name="a",
            description="an entry",
            category="Linux",
            icon_url="http://example.com/a.png",
            disk_format=DiskFormat.RAW,
            disk_size=10,
            cpu=1,
            ram_mb=64,
        )
    ],
)


def part(name: st.SearchStrategy[str], body: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    headers = st.lists(
        st.sampled_from(
            [
                b"Content-Type: application/json",
                b"Content-Type: application/octet-stream",
                b"Content-Transfer-Encoding: base64",
                b"Content-Transfer-Encoding: quoted-printable",
                b"Content-Encoding: gzip",
                b"Content-Length: 3",
                b"Content-Length: -1",
                b"Content-Length: x",
            ]
        )
        | st.binary(max_size=40),
        max_size=2,
    )
    return st.builds(
        lambda n, f, h, b: (
            b'Content-Disposition: form-data; name="'
            + n.encode("utf-8", "surrogatepass")
            + b'"'
            + (
                b'; filename="' + f.encode("utf-8", "surrogatepass") + b'"'
                if f is not None
                else b""
            )
            + b"".join(b"\r\n" + x for x in h)
            + b"\r\n\r\n"
            + b
        ),
        name,
        st.none() | st.text(max_size=20),
        headers,
        body,
    )


def multipart_bodies() -> st.SearchStrategy[bytes]:
    info = st.one_of(
        st.just(b'{"name": "x"}'),
        st.just(b'{"name": "x", "disk_format": "RAW"}'),
        st.binary(max_size=60),
        st.builds(lambda t: t.encode("utf-8", "surrogatepass"), st.text(max_size=60)),
    )
    names = st.sampled_from(["diskInfo", "diskFile", "other", ""]) | st.text(max_size=10)
    parts = st.lists(part(names, info | st.binary(max_size=300)), max_size=4)
    return st.builds(
        lambda ps, end, junk: (
            b"".join(b"--b\r\n" + p + b"\r\n" for p in ps) + (b"--b--\r\n" if end else b"") + junk
        ),
        parts,
        st.booleans(),
        st.binary(max_size=20),
    )


@FUZZ
@given(
    content_type=CONTENT_TYPES,
    body=st.binary(max_size=2000) | multipart_bodies(),
    enterprise=st.sampled_from(["1", "2", "x", "-1", "1" * 30]),
)
async def test_random_bodies_posted_never_give_a_500(
    am: Am, content_type: str, body: bytes, enterprise: str
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = await am.client.post(templates_url(enterprise), data=body, headers=headers)
    text = await response.text()
    assert response.status < 500 or response.status in (502, 503), text
    assert response.status in (200, 201, 400, 404, 413, 415, 422, 502), text
    if response.status >= 400:
        error = await response.json()
        assert set(error) == {"code", "message"} and error["message"]


_names = itertools.count()


def mutated(data: bytes) -> st.SearchStrategy[bytes]:
    """A document with a few bytes changed, cut short, or a piece repeated."""

    def mutate(ops: list[tuple[int, int, int]]) -> bytes:
        out = bytearray(data)
        for kind, at, value in ops:
            if not out:
                break
            at %= len(out)
            if kind == 0:
                out[at] = value
            elif kind == 1:
                del out[at:]
            elif kind == 2:
                del out[at : at + value]
            else:
                out[at:at] = out[at : at + value]
        return bytes(out)

    op = st.tuples(st.integers(0, 3), st.integers(0, 10**6), st.integers(0, 255))
    return st.lists(op, min_size=1, max_size=4).map(mutate)


@settings(FUZZ, max_examples=100)
@given(document=st.binary(max_size=500) | mutated(ENVELOPE))
async def test_random_envelopes_never_give_a_500(am: Am, remote: Remote, document: bytes) -> None:
    name = f"fuzz-{next(_names)}.ovf"
    await asyncio.to_thread((remote.root / name).write_bytes, document)
    response = await am.client.post(
        templates_url(), data=remote.url(name), headers={"Content-Type": "text/plain"}
    )
    text = await response.text()
    assert response.status in (201, 413, 422), text
    await _settle(am)


async def _settle(am: Am) -> None:
    """Let a download that started fail (its disk is nowhere) before the next example."""
    await eventually(lambda: not [n for n in am.service.tasks.running() if "download" in n])


@settings(FUZZ, max_examples=100)
@given(document=st.binary(max_size=500) | mutated(CATALOGUE))
async def test_random_catalogues_never_give_a_500(am: Am, remote: Remote, document: bytes) -> None:
    name = f"fuzz-{next(_names)}.xml"
    await asyncio.to_thread((remote.root / name).write_bytes, document)
    response: Any = await am.client.get(templates_url(), params={"catalogue": remote.url(name)})
    text = await response.text()
    assert response.status in (200, 413, 422), text
