"""Downloading an OVF package (its envelope, manifest and files) into the staging area.

Each file is streamed to `<file>.part` and renamed to its name once whole, so a file
without its `.part` is complete and a later attempt (or a restart) skips it. A partial
file is resumed with a Range request; its validator (the strong ETag, else the
Last-Modified the server gave) goes along as If-Range, so a file that changed on the
server comes back whole instead of spliced. A file is never let grow past its declared
size or the limit.

What goes wrong is told apart for the caller: DownloadInterrupted (connection dropped or
refused, timeout, a 5xx or 429) is worth another attempt, from where the last one got;
anything else (404, a bad envelope, a file too big) is not. `PackageDownload.run` makes
at most `download_attempts` attempts, with backoff between them.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

import aiohttp
import structlog

from abiquo_dc.am.errors import (
    BadUrl,
    DiskSizeMismatch,
    DownloadInterrupted,
    RemoteNotFound,
    RemoteRefused,
    TooBig,
)
from abiquo_dc.am.ovf import Envelope, OvfError, OvfFile, parse_envelope, parse_manifest
from abiquo_dc.am.repository import slug
from abiquo_dc.am.sink import FileSink
from abiquo_dc.settings import AmSettings
from abiquo_runtime.backoff import Backoff
from abiquo_runtime.errors import AbiquoError

# Byte offsets must mean the same on both ends: no transparent compression.
IDENTITY = {"Accept-Encoding": "identity"}
MAX_URL = 2048
PART = ".part"
VALIDATOR = ".validator"
_CONTENT_RANGE = re.compile(r"^bytes\s+(\d+)-(\d+)/(\d+|\*)$")
_UNSATISFIED_RANGE = re.compile(r"^bytes\s+\*/(\d+)$")

Run = Callable[..., Awaitable[Any]]
# (bytes so far, bytes in all; None when not known yet)
Progress = Callable[[int, int | None], Awaitable[None]]

log = structlog.get_logger("abiquo.dc.am.downloads")


def check_url(url: str) -> str:
    """`url` when it is an http(s) URL with a host; BadUrl otherwise."""
    url = url.strip()
    if not url:
        raise BadUrl("no URL given")
    if len(url) > MAX_URL:
        raise BadUrl(f"the URL is longer than {MAX_URL} characters")
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        raise BadUrl("the URL holds spaces or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (it raises for a port out of range)
    except ValueError as exc:
        raise BadUrl(f"{url[:100]!r} is not a URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise BadUrl(f"only http and https URLs are taken, not {url[:100]!r}")
    if not parts.hostname:
        raise BadUrl(f"{url[:100]!r} names no host")
    return url


def envelope_name(url: str) -> str:
    """The envelope's file name in the template's directory: the URL's own, if usable."""
    name = unquote(PurePosixPath(urlsplit(url).path).name)
    if name.lower().endswith(".ovf") and slug(name) == name:
        return name
    return "envelope.ovf"


def _refusal(status: int, url: str) -> AbiquoError:
    message = f"{url[:200]} answered HTTP {status}"
    if status in (404, 410):
        return RemoteNotFound(message)
    if status in (408, 425, 429) or status >= 500:
        return DownloadInterrupted(message)
    return RemoteRefused(message)


def _interrupted(url: str, exc: BaseException) -> DownloadInterrupted:
    reason = str(exc) or type(exc).__name__
    return DownloadInterrupted(f"{url[:200]}: {reason}")


async def fetch_document(session: aiohttp.ClientSession, url: str, *, limit: int) -> bytes:
    """A small document (an envelope, a manifest, a catalogue), whole, at most `limit`."""
    try:
        async with session.get(url, headers=IDENTITY) as response:
            if response.status != 200:
                raise _refusal(response.status, url)
            if response.content_length is not None and response.content_length > limit:
                raise TooBig(f"{url[:200]} is {response.content_length} bytes, over {limit}")
            data = bytearray()
            async for chunk in response.content.iter_any():
                data += chunk
                if len(data) > limit:
                    raise TooBig(f"{url[:200]} is more than {limit} bytes")
            return bytes(data)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise _interrupted(url, exc) from None


@dataclass(frozen=True)
class Package:
    """A downloaded package, in its staging directory."""

    envelope: Envelope
    envelope_name: str
    manifest: dict[str, tuple[str, str]] | None


def _validator(response: aiohttp.ClientResponse) -> str:
    etag = response.headers.get("ETag", "")
    if etag and not etag.startswith("W/"):
        return etag
    return response.headers.get("Last-Modified", "")


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


def _size_so_far(dest: Path) -> int:
    """Bytes of a file on disk, whole or partial."""
    whole = _size(dest)
    return whole if whole is not None else _size(dest.with_name(dest.name + PART)) or 0


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except (FileNotFoundError, UnicodeDecodeError):
        return ""


def _write_text(path: Path, text: str) -> None:
    path.write_text(text)


def _drop(*paths: Path) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def _prepare(staging: Path, name: str, data: bytes) -> None:
    """Keep what an earlier attempt got only if it was for this very envelope."""
    envelope = staging / name
    try:
        same = envelope.read_bytes() == data
    except FileNotFoundError:
        same = False
    if not same:
        shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True, exist_ok=True)
    if not same:
        envelope.write_bytes(data)


class PackageDownload:
    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        url: str,
        staging: Path,
        settings: AmSettings,
        run: Run,
        executor: Any,
        progress: Progress,
        backoff: Backoff,
        envelope_data: bytes | None = None,
    ) -> None:
        self.session = session
        self.url = url
        self.staging = staging
        self.settings = settings
        self._run = run
        self._executor = executor
        self._progress = progress
        self._backoff = backoff
        self._envelope_data = envelope_data
        self.name = envelope_name(url)
        # Bytes of the package on disk, and in all (None while a size is unknown).
        self._done = 0
        self._total: int | None = None

    async def run(self) -> Package:
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._attempt()
            except DownloadInterrupted as exc:
                if attempt >= self.settings.download_attempts:
                    raise DownloadInterrupted(
                        f"{exc.message} (gave up after {attempt} attempts)"
                    ) from None
                delay = self._backoff.next_delay()
                log.info(
                    "download interrupted; resuming",
                    url=self.url,
                    attempt=attempt,
                    retry_in=round(delay, 2),
                    reason=exc.message,
                )
                await asyncio.sleep(delay)

    async def _attempt(self) -> Package:
        limit = self.settings.max_document_bytes
        data = self._envelope_data
        if data is None:
            data = await fetch_document(self.session, self.url, limit=limit)
        # Parsed in a thread: a large document would stall the loop.
        envelope = await self._run(
            partial(parse_envelope, data, max_bytes=limit, base_url=self.url)
        )
        # Fetched once: the same envelope for every attempt (its files are what was
        # checked when the download was asked for).
        self._envelope_data = data
        await self._run(_prepare, self.staging, self.name, data)
        manifest = await self._manifest(envelope)
        sizes = [f.size for f in envelope.files]
        self._total = None if None in sizes else sum(s or 0 for s in sizes)
        self._done = 0
        for file in envelope.files:
            self._done += await self._run(_size_so_far, self.staging / file.path)
        for file in envelope.files:
            await self._file(file)
        return Package(envelope=envelope, envelope_name=self.name, manifest=manifest)

    async def _manifest(self, envelope: Envelope) -> dict[str, tuple[str, str]] | None:
        """The package's manifest (<envelope name>.mf beside it), None when it has none."""
        name = self.name[:-4] + ".mf"
        # Named after the envelope as the server names it, which may not be a name kept.
        remote_name = urlsplit(self.url).path.rpartition("/")[2]
        if remote_name.lower().endswith(".ovf"):
            remote_name = remote_name[:-4]
        try:
            data = await fetch_document(
                self.session,
                urljoin(self.url, remote_name + ".mf"),
                limit=self.settings.max_document_bytes,
            )
        except RemoteNotFound:
            return None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise OvfError(f"the manifest {name} is not UTF-8 text") from None
        manifest: dict[str, tuple[str, str]] = await self._run(parse_manifest, text)
        # The envelope's digest is listed under its remote name; it is kept as self.name.
        listed = unquote(urlsplit(self.url).path.rpartition("/")[2])
        if listed in manifest and listed != self.name:
            manifest[self.name] = manifest.pop(listed)
        if all(f.path != PurePosixPath(name) for f in envelope.files):
            await self._run(_write_text, self.staging / name, text)
        return manifest

    async def _file(self, file: OvfFile) -> None:
        dest = self.staging / file.path
        if await self._run(_size, dest) is not None:
            return  # whole already (a file is renamed to its name only once whole)
        part = dest.with_name(dest.name + PART)
        validator_path = dest.with_name(dest.name + VALIDATOR)
        await self._run(dest.parent.mkdir, 0o755, True, True)
        offset = await self._run(_size, part) or 0
        if file.size is not None and offset > file.size:
            offset = 0
        url = urljoin(self.url, file.href)
        check_url(url)
        headers = dict(IDENTITY)
        if offset:
            headers["Range"] = f"bytes={offset}-"
            validator = await self._run(_read_text, validator_path)
            if validator:
                headers["If-Range"] = validator
        try:
            async with self.session.get(url, headers=headers) as response:
                await self._receive(response, file, url, part, validator_path, offset)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _interrupted(url, exc) from None
        await self._run(os.rename, part, dest)
        await self._run(_drop, validator_path)

    async def _receive(
        self,
        response: aiohttp.ClientResponse,
        file: OvfFile,
        url: str,
        part: Path,
        validator_path: Path,
        offset: int,
    ) -> None:
        total: int | None
        if response.status == 206 and offset:
            found = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
            if found is None or int(found.group(1)) != offset:
                # Not the part asked for: start that file over.
                await self._run(_drop, part, validator_path)
                raise DownloadInterrupted(f"{url[:200]} sent a range that was not asked for")
            total = None if found.group(3) == "*" else int(found.group(3))
        elif response.status == 200:
            self._done -= offset
            offset = 0
            total = response.content_length
            validator = _validator(response)
            if validator:
                await self._run(_write_text, validator_path, validator)
            else:
                await self._run(_drop, validator_path)
        elif response.status == 416 and offset:
            found = _UNSATISFIED_RANGE.match(response.headers.get("Content-Range", ""))
            if found is not None and int(found.group(1)) == offset:
                return  # the part was whole already
            await self._run(_drop, part, validator_path)
            raise DownloadInterrupted(f"{url[:200]} cannot resume {file.href!r}: starting over")
        else:
            raise _refusal(response.status, url)
        if file.size is not None and total is not None and total != file.size:
            raise DiskSizeMismatch(
                f"{url[:200]} is {total} bytes where the envelope says {file.size}"
            )
        expected = file.size if file.size is not None else total
        limit = self.settings.max_upload_bytes
        if expected is not None and expected > limit:
            raise TooBig(f"{file.href!r} is {expected} bytes, over the limit of {limit}")
        sink = await FileSink.open(
            part, offset=offset, limit=limit, executor=self._executor, what=file.href
        )
        try:
            async for chunk in response.content.iter_any():
                if file.size is not None and sink.size + len(chunk) > file.size:
                    raise DiskSizeMismatch(
                        f"{file.href!r} is bigger than the {file.size} bytes the envelope says"
                    )
                await sink.write(chunk)
                self._done += len(chunk)
                await self._progress(self._done, self._total)
            if expected is not None and sink.size < expected:
                raise DownloadInterrupted(f"{url[:200]} ended at byte {sink.size} of {expected}")
            await sink.close()
        except BaseException:
            await sink.abort()
            raise
