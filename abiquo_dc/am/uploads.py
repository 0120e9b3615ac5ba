"""Receiving a template uploaded as multipart/form-data, streamed straight to disk.

The body holds two parts, in this order:

- `diskInfo`: the template's metadata as JSON (`UploadInfo`: name, and optionally
  description, disk_format, cpu, ram_mb, hd_bytes, icon_url, category);
- `diskFile`: the disk itself (its filename, made safe, is the file's name in the
  template's directory), sent as binary (no transfer or content encoding).

The disk is read from the body's stream a chunk at a time, as the connection delivers
it, and written as it comes (sink.FileSink), so an upload of any size takes about two
blocks of memory; past the limit it is refused at once.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote

import msgspec
from aiohttp import BodyPartReader, MultipartReader, StreamReader, hdrs
from aiohttp.http_exceptions import HttpProcessingError

from abiquo_dc.am.errors import BadUpload
from abiquo_dc.am.repository import slug
from abiquo_dc.am.sink import FileSink
from abiquo_dc.protocol.definitions import DiskFormat

INFO_PART = "diskInfo"
DISK_PART = "diskFile"
MAX_INFO_BYTES = 64 * 1024
MAX_NAME = 255
_RESERVED = {"template.json", "formats"}
# What an XML document (the envelope written for the upload) cannot carry.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")

# (bytes received so far)
Progress = Callable[[int], Awaitable[None]]


class UploadInfo(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: str
    description: str = ""
    # As the uploader believes it is: it must be what qemu-img finds.
    disk_format: DiskFormat | None = None
    cpu: int | None = None
    ram_mb: int | None = None
    hd_bytes: int | None = None
    icon_url: str = ""
    category: str = ""


_info_decoder = msgspec.json.Decoder(UploadInfo)


@dataclass(frozen=True)
class Upload:
    """An upload as HTTP hands it over: the multipart reader (for the metadata part and
    each part's headers), and the body's stream and boundary, from which the disk is read
    directly."""

    reader: MultipartReader
    content: StreamReader
    boundary: bytes
    # The whole body's length, when the client said it.
    length: int | None


@contextlib.contextmanager
def _malformed() -> Iterator[None]:
    """aiohttp's multipart reader says a body is malformed with these."""
    try:
        yield
    except (ValueError, RuntimeError, AssertionError, LookupError, HttpProcessingError) as exc:
        raise BadUpload(f"the multipart body is malformed: {exc}") from None


async def _next_part(reader: MultipartReader, expected: str) -> BodyPartReader:
    with _malformed():
        part = await reader.next()
    if not isinstance(part, BodyPartReader) or part.name != expected:
        got = "nothing" if part is None else repr(getattr(part, "name", None) or "a nested part")
        raise BadUpload(f"expected the part {expected!r} next, got {got}")
    encoding = part.headers.get(hdrs.CONTENT_TRANSFER_ENCODING, "binary").lower()
    if encoding not in ("binary", "8bit", "7bit") or part.headers.get(hdrs.CONTENT_ENCODING):
        raise BadUpload(f"the part {expected!r} must be sent as is, without an encoding")
    return part


def _check_info(info: UploadInfo) -> UploadInfo:
    if not info.name.strip():
        raise BadUpload("the template needs a name")
    if len(info.name) > MAX_NAME:
        raise BadUpload(f"the name is longer than {MAX_NAME} characters")
    for value, what in (
        (info.name, "name"),
        (info.description, "description"),
        (info.category, "category"),
        (info.icon_url, "icon_url"),
    ):
        # Refused now rather than once the disk is in: its envelope could not hold it.
        if _NOT_XML.search(value):
            raise BadUpload(f"the {what} holds characters XML cannot carry")
    if info.cpu is not None and not 1 <= info.cpu <= 4096:
        raise BadUpload("cpu must be between 1 and 4096")
    if info.ram_mb is not None and not 1 <= info.ram_mb <= 16 * 1024**2:
        raise BadUpload("ram_mb must be between 1 and 16777216")
    if info.hd_bytes is not None and info.hd_bytes < 0:
        raise BadUpload("hd_bytes cannot be negative")
    if info.icon_url and not info.icon_url.startswith(("http://", "https://")):
        raise BadUpload("icon_url must be an http or https URL")
    return info


async def read_info(upload: Upload) -> UploadInfo:
    """The first part: the template's metadata."""
    part = await _next_part(upload.reader, INFO_PART)
    data = bytearray()
    with _malformed():
        while chunk := await part.read_chunk(MAX_INFO_BYTES):
            data += chunk
            if len(data) > MAX_INFO_BYTES:
                raise BadUpload(f"{INFO_PART} is longer than {MAX_INFO_BYTES} bytes")
    try:
        info = _info_decoder.decode(bytes(data))
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise BadUpload(f"{INFO_PART} is not the template's JSON: {exc}") from None
    return _check_info(info)


def disk_file_name(filename: str | None) -> str:
    """The disk's name in the template's directory, from the name it was sent with."""
    # Some clients percent-encode it; Windows ones send the whole path.
    base = PurePosixPath(unquote(filename or "").replace("\\", "/")).name
    name = slug(base, default="disk")
    if name in _RESERVED or name.endswith((".ovf", ".mf")):
        name = f"disk-{name}"
    return name


async def _copy_until(
    content: StreamReader, delimiter: bytes, write: Callable[[bytes | memoryview], Awaitable[None]]
) -> bytes:
    """Hand `write` the stream up to `delimiter`; what came after it in the last chunk.

    Chunks are taken as the connection delivers them and searched where they lie: only
    the few bytes at the end of a chunk that may begin the delimiter are held back.
    (aiohttp's part reader copies each byte several times over to find a boundary,
    which at disk sizes is most of the CPU an upload costs.)
    """
    size = len(delimiter)
    held = b""
    while True:
        chunk = await content.readany()
        if not chunk:
            raise BadUpload("the body ended before the disk part did")
        if held and len(chunk) < size:
            chunk, held = held + chunk, b""
        if len(chunk) < size and not held:
            held = chunk
            continue
        if held:
            # A delimiter that starts in what was held ends within the chunk's first
            # size - 1 bytes.
            junction = held + chunk[: size - 1]
            at = junction.find(delimiter)
            if at >= 0:
                await write(junction[:at])
                return chunk[at + size - len(held) :]
            await write(held)
            held = b""
        at = chunk.find(delimiter)
        if at >= 0:
            await write(memoryview(chunk)[:at])
            return chunk[at + size :]
        cut = len(chunk) - (size - 1)
        await write(memoryview(chunk)[:cut])
        held = chunk[cut:]


async def receive_disk(
    upload: Upload,
    directory: Path,
    *,
    limit: int,
    executor: Executor | None,
    progress: Progress,
) -> Path:
    """The second part, written to `directory`; the body must end after it."""
    part = await _next_part(upload.reader, DISK_PART)
    # The part's headers are read: the stream is at its first byte, which is taken from
    # there (the part reader is left unused).
    path = directory / disk_file_name(part.filename)
    sink = await FileSink.open(path, limit=limit, executor=executor, what="the disk")

    async def write(data: bytes | memoryview) -> None:
        await sink.write(data)
        await progress(sink.size)

    try:
        with _malformed():
            after = await _copy_until(upload.content, b"\r\n--" + upload.boundary, write)
            while len(after) < 2:
                more = await upload.content.readany()
                if not more:
                    break
                after += more
        await sink.close()
    except BaseException:
        await sink.abort()
        raise
    # "--" closes the body; anything else after the delimiter starts another part.
    if not after.startswith(b"--"):
        raise BadUpload("the body holds more than the template's metadata and its disk")
    return path
