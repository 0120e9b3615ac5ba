"""The template repository on disk (an NFS mount the hosts share, in production).

    <root>/<mark file>                    says the mount is there
    <root>/<enterprise id>/               one directory per enterprise, made on demand
        <template dir>/                   one per template, never nested
            <name>.ovf                    the OVF envelope
            <disk files>                  as the envelope's References name them
            formats/<FORMAT>/<file>       the same disk converted (by the BPM)
            template.json                 the template as recorded (see METADATA)
        .incoming/<key>/                  a template being downloaded or uploaded

A template is built in `.incoming/` and renamed into place only once complete and
verified, so the repository never shows half a template; a rename within one file
system is atomic. A download keeps its partial files there between attempts (and
restarts); anything else that fails is deleted. Deletion renames the template out of
sight first, then removes it.

Every call that touches the disk runs in the executor it is given: on NFS any of them
may hang for as long as the server is away, and the event loop must not.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import re
import shutil
import uuid
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from typing import TypeVar
from urllib.parse import unquote, urlsplit

import msgspec

from abiquo_dc.am.errors import RepositoryUnavailable, TemplateConflict
from abiquo_dc.protocol.templates import TemplateDefinition
from abiquo_dc.settings import RepositorySettings
from abiquo_runtime.errors import InvalidInput, NotFound

T = TypeVar("T")

INCOMING = ".incoming"
METADATA = "template.json"
FORMATS = "formats"
# Enterprise ids are Abiquo's numeric ids: nothing else names a directory here.
_ENTERPRISE = re.compile(r"^[0-9]{1,18}$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_NAME = 120
# How long checking the mount may take before it counts as away (a hung NFS server).
MOUNT_TIMEOUT = 10.0

_metadata_decoder = msgspec.json.Decoder(TemplateDefinition)


def check_enterprise(enterprise_id: str) -> str:
    if not _ENTERPRISE.match(enterprise_id):
        raise InvalidInput(f"{enterprise_id!r} is not an enterprise id (a number)")
    return enterprise_id


def slug(text: str, *, default: str = "template") -> str:
    """`text` as one safe path component: letters, digits, '.', '_' and '-' only."""
    cleaned = _UNSAFE.sub("_", text).strip("._-")
    return cleaned[:_MAX_NAME] or default


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def download_dir_name(url: str) -> str:
    """The template directory of the package at `url`: its host and path, flattened
    into one readable name (a hash is added when that would be ambiguous or long)."""
    parts = urlsplit(url)
    host = parts.hostname or "remote"
    if parts.port:
        host = f"{host}_{parts.port}"
    path = unquote(parts.path)
    if path.lower().endswith(".ovf"):
        path = path[:-4]
    components = [c for c in path.split("/") if c]
    name = slug("_".join([host, *components]))
    if parts.query or len(name) > _MAX_NAME - 12 or name != "_".join([host, *components]):
        name = f"{name[: _MAX_NAME - 12]}-{_short_hash(url)}"
    return name


def new_dir_name(name: str) -> str:
    """A fresh template directory for an upload or an instance named `name`."""
    return f"{slug(name)[: _MAX_NAME - 9]}-{uuid.uuid4().hex[:8]}"


def download_key(url: str) -> str:
    """The staging directory of a download: the same for the same URL, so a retry (or a
    restart) finds what the last attempt got."""
    return "dl-" + hashlib.sha256(url.encode()).hexdigest()[:32]


def upload_key() -> str:
    return "up-" + uuid.uuid4().hex


def file_system(root: Path) -> tuple[int, int]:
    """(capacity, free) in bytes of the file system `root` is on; free is what an
    unprivileged writer may still use (f_bavail). Blocks on a hung NFS server."""
    fs = os.statvfs(root)
    return fs.f_blocks * fs.f_frsize, fs.f_bavail * fs.f_frsize


@dataclass(frozen=True)
class Usage:
    used_bytes: int
    capacity_bytes: int
    free_bytes: int
    templates: int


@dataclass(frozen=True)
class FoundTemplate:
    """A template directory as found on disk: with its recorded definition, or with the
    envelopes an operator put there by hand (to be inspected)."""

    dir_name: str
    definition: TemplateDefinition | None
    envelopes: tuple[str, ...]
    # Why the recorded definition could not be read, if it could not.
    problem: str = ""


class Repository:
    def __init__(self, settings: RepositorySettings, *, executor: Executor | None) -> None:
        self.settings = settings
        self.root = Path(settings.path).absolute()
        self._executor = executor

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """`fn(*args)` in the repository's executor."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, partial(fn, *args))

    # -- where things are --------------------------------------------------------------

    def enterprise_dir(self, enterprise_id: str) -> Path:
        return self.root / check_enterprise(enterprise_id)

    def template_dir(self, enterprise_id: str, dir_name: str) -> Path:
        if dir_name != slug(dir_name, default="") or dir_name in (INCOMING, FORMATS):
            raise InvalidInput(f"{dir_name!r} is not a template directory")
        return self.enterprise_dir(enterprise_id) / dir_name

    def staging_dir(self, enterprise_id: str, key: str) -> Path:
        return self.enterprise_dir(enterprise_id) / INCOMING / key

    def relative(self, path: Path) -> str:
        """`path` relative to the repository's root, with '/' (as central records it)."""
        return path.relative_to(self.root).as_posix()

    def resolve_file(self, relative: str) -> Path:
        """A file served to hypervisors, named relative to the root: NotFound for anything
        outside the templates (hidden parts, the staging area, an escape)."""
        parts = PurePosixPath(relative).parts
        if (
            not parts
            or any(p in ("", ".", "..") or p.startswith(".") for p in parts)
            or not _ENTERPRISE.match(parts[0])
            or len(parts) < 3
        ):
            raise NotFound(f"no file {relative!r} in the repository")
        return self.root.joinpath(*parts)

    async def servable(self, relative: str) -> Path:
        """`resolve_file(relative)`, checked to be a regular file that is really inside
        the repository (a symbolic link put in by hand may point anywhere)."""
        path = self.resolve_file(relative)

        def check() -> bool:
            real = Path(os.path.realpath(path))
            return real.is_relative_to(Path(os.path.realpath(self.root))) and real.is_file()

        if not await self.run(check):
            raise NotFound(f"no file {relative!r} in the repository")
        return path

    # -- the mount -----------------------------------------------------------------------

    async def check_mounted(self) -> None:
        """RepositoryUnavailable unless the mark file is there (the mount is)."""
        mark = self.root / self.settings.mark_file
        try:
            async with asyncio.timeout(MOUNT_TIMEOUT):
                there = await self.run(mark.is_file)
        except TimeoutError:
            raise RepositoryUnavailable(f"the repository {self.root} does not answer") from None
        if not there:
            raise RepositoryUnavailable(
                f"the repository {self.root} is not mounted (no {self.settings.mark_file})"
            )

    # -- enterprises -----------------------------------------------------------------------

    async def enterprises(self) -> list[str]:
        def listing() -> list[str]:
            try:
                names = [e.name for e in os.scandir(self.root) if e.is_dir(follow_symlinks=False)]
            except FileNotFoundError:
                return []
            return sorted((n for n in names if _ENTERPRISE.match(n)), key=int)

        return await self.run(listing)

    async def usage(self, enterprise_id: str) -> Usage:
        directory = self.enterprise_dir(enterprise_id)

        def measure() -> Usage:
            used = templates = 0
            if directory.is_dir():
                templates = sum(
                    1
                    for e in os.scandir(directory)
                    if e.is_dir(follow_symlinks=False) and not e.name.startswith(".")
                )
                for base, _, files in os.walk(directory):
                    for name in files:
                        try:
                            # Allocated blocks, not lengths: sparse disks take little.
                            used += (Path(base) / name).lstat().st_blocks * 512
                        except FileNotFoundError:
                            continue
            capacity, free = file_system(self.root)
            return Usage(
                used_bytes=used, capacity_bytes=capacity, free_bytes=free, templates=templates
            )

        return await self.run(measure)

    # -- building a template ---------------------------------------------------------------

    async def prepare_staging(self, enterprise_id: str, key: str, *, fresh: bool) -> Path:
        """The staging directory `key`, made if missing (emptied first when `fresh`)."""
        staging = self.staging_dir(enterprise_id, key)

        def prepare() -> None:
            if fresh:
                shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True, exist_ok=True)

        await self.run(prepare)
        return staging

    async def commit(self, staging: Path, final: Path) -> None:
        """Move a complete template into place; TemplateConflict when the place is taken."""

        def move() -> None:
            try:
                # rename() would replace an empty directory there: refuse that as well.
                if final.exists():
                    raise TemplateConflict(f"{final.name} is already in the repository")
                # The directory's entries reach the disk before the rename makes them seen.
                fd = os.open(staging, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                staging.rename(final)
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    raise TemplateConflict(f"{final.name} is already in the repository") from None
                raise

        await self.run(move)

    async def remove(self, path: Path) -> bool:
        """Delete a template or staging directory: out of sight at once (a rename into the
        staging area), then removed. False when it was not there."""
        trash = path.parent / INCOMING / f"trash-{uuid.uuid4().hex}"
        if path.parent.name == INCOMING:
            trash = path.parent / f"trash-{uuid.uuid4().hex}"

        def remove() -> bool:
            try:
                trash.parent.mkdir(exist_ok=True)
                path.rename(trash)
            except FileNotFoundError:
                return False
            shutil.rmtree(trash, ignore_errors=True)
            return True

        return await self.run(remove)

    async def clean_staging(self, enterprise_id: str, *, keep: Callable[[str], bool]) -> None:
        """Delete what is in the staging area but for the entries `keep` names (the
        partial downloads worth resuming)."""
        incoming = self.enterprise_dir(enterprise_id) / INCOMING

        def clean() -> None:
            try:
                entries = list(os.scandir(incoming))
            except FileNotFoundError:
                return
            for entry in entries:
                if not keep(entry.name):
                    shutil.rmtree(entry.path, ignore_errors=True)

        await self.run(clean)

    # -- what a template directory holds ---------------------------------------------------

    async def write_metadata(self, directory: Path, definition: TemplateDefinition) -> None:
        await self.write_file(directory / METADATA, msgspec.json.encode(definition))

    async def write_file(self, path: Path, data: bytes) -> None:
        """Write `path` whole or not at all (a temporary file renamed over it)."""

        def write() -> None:
            temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
            try:
                with temporary.open("xb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                temporary.rename(path)
            finally:
                temporary.unlink(missing_ok=True)

        await self.run(write)

    async def read_definition(self, directory: Path) -> TemplateDefinition | None:
        """The template recorded in `directory`, None when none (or unreadable) is."""

        def read() -> TemplateDefinition | None:
            try:
                return _metadata_decoder.decode((directory / METADATA).read_bytes())
            except (OSError, msgspec.DecodeError, msgspec.ValidationError):
                return None

        return await self.run(read)

    async def read_bytes(self, path: Path, limit: int) -> bytes:
        def read() -> bytes:
            with path.open("rb") as f:
                data = f.read(limit + 1)
            if len(data) > limit:
                raise InvalidInput(f"{path.name} is bigger than {limit} bytes")
            return data

        return await self.run(read)

    async def scan(self, enterprise_id: str) -> list[FoundTemplate]:
        """Every template directory of the enterprise, as found on disk."""
        directory = self.enterprise_dir(enterprise_id)

        def scan() -> list[FoundTemplate]:
            try:
                entries = sorted(os.scandir(directory), key=lambda e: e.name)
            except FileNotFoundError:
                return []
            found = []
            for entry in entries:
                if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
                    continue
                found.append(_inspect_dir(Path(entry.path)))
            return found

        return await self.run(scan)

    async def conversion(self, template_dir: Path, fmt: str) -> Path | None:
        """The disk converted to `fmt` under formats/<fmt>/, if the BPM made it."""
        directory = template_dir / FORMATS / fmt

        def find() -> Path | None:
            try:
                files = sorted(
                    e.name for e in os.scandir(directory) if e.is_file(follow_symlinks=False)
                )
            except (FileNotFoundError, NotADirectoryError):
                return None
            files = [f for f in files if not f.startswith(".")]
            return directory / files[0] if files else None

        return await self.run(find)

    async def file_size(self, path: Path) -> int | None:
        def size() -> int | None:
            try:
                return path.stat().st_size
            except FileNotFoundError:
                return None

        return await self.run(size)


def _inspect_dir(directory: Path) -> FoundTemplate:
    metadata = directory / METADATA
    envelopes = tuple(
        sorted(e.name for e in os.scandir(directory) if e.name.endswith(".ovf") and e.is_file())
    )
    try:
        data = metadata.read_bytes()
    except FileNotFoundError:
        return FoundTemplate(directory.name, None, envelopes)
    try:
        definition = _metadata_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return FoundTemplate(directory.name, None, envelopes, problem=f"{METADATA}: {exc}")
    return FoundTemplate(directory.name, definition, envelopes)
