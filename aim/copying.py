"""A safe disk copy: checked for space, atomic, sparse-preserving, observable, cancellable.

- The destination's free space is checked against the source's apparent size before any
  byte is written (a sparse file may need less, but a copy that fails half way wastes the
  datacenter's time: better refuse at once).
- Data goes to ".<name>.part-<random>" beside the destination and is renamed over it only
  when complete and fsynced (file, then directory): a reader never sees a partial disk,
  and any failure removes the temporary.
- Only the source's data extents are read (SEEK_DATA/SEEK_HOLE); all-zero chunks are not
  written either; the result is ftruncated to the full size. Holes stay holes.
- The blocking work runs in a thread; it reports (copied, total) after each chunk and
  stops between chunks when its cancel event is set.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import os
import secrets
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import structlog

CHUNK = 8 * 1024 * 1024

ProgressCallback = Callable[[int, int], None]
# Called in the copying thread after each chunk with (copied, total); tests use it to
# throttle, pause or break a copy.
ChunkHook = Callable[[int, int], None]

log = structlog.get_logger("aim.copying")


class CopyError(Exception):
    """A copy that did not happen; nothing was left at the destination."""


class SourceMissing(CopyError):
    pass


class NoSpace(CopyError):
    pass


class DestinationExists(CopyError):
    pass


class CopyCancelled(CopyError):
    pass


class CopyIOError(CopyError):
    pass


def free_bytes(directory: str | os.PathLike[str]) -> int:
    """Bytes an unprivileged writer may still use on the filesystem of `directory`."""
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


def _data_extents(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """(start, end) of the regions of `fd` that may hold data, in order."""
    try:
        first = os.lseek(fd, 0, os.SEEK_DATA)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            return  # all hole
        if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):
            # No SEEK_DATA here: the whole file is one extent, and the zero-chunk test in
            # the copy loop keeps the holes.
            yield 0, size
            return
        raise
    pos = first
    while pos < size:
        hole = min(os.lseek(fd, pos, os.SEEK_HOLE), size)
        yield pos, hole
        if hole >= size:
            return
        try:
            pos = os.lseek(fd, hole, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                return
            raise


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def copy_file_sync(
    source: Path,
    destination: Path,
    *,
    overwrite: bool = True,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    chunk_size: int = CHUNK,
    on_chunk: ChunkHook | None = None,
    free_space: Callable[[Path], int] = free_bytes,
) -> int:
    """Copy `source` to `destination` (blocking); return the size copied."""
    try:
        src = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise SourceMissing(f"{source} does not exist") from exc
    except OSError as exc:
        raise CopyIOError(f"cannot open {source}: {exc.strerror}") from exc
    try:
        return _copy_from(
            src,
            source,
            destination,
            overwrite=overwrite,
            progress=progress,
            cancel=cancel,
            chunk_size=chunk_size,
            on_chunk=on_chunk,
            free_space=free_space,
        )
    except OSError as exc:
        # Whatever else the OS refused (fstat, statvfs): still a copy error with a reason.
        raise CopyIOError(f"copying {source} to {destination}: {exc}") from exc
    finally:
        os.close(src)


def _copy_from(
    src: int,
    source: Path,
    destination: Path,
    *,
    overwrite: bool,
    progress: ProgressCallback | None,
    cancel: threading.Event | None,
    chunk_size: int,
    on_chunk: ChunkHook | None,
    free_space: Callable[[Path], int],
) -> int:
    st = os.fstat(src)
    if not stat.S_ISREG(st.st_mode):
        raise CopyIOError(f"{source} is not a regular file")
    total = st.st_size
    directory = destination.parent
    if not overwrite and os.path.lexists(destination):
        raise DestinationExists(f"{destination} exists")
    try:
        available = free_space(directory)
    except FileNotFoundError as exc:
        raise SourceMissing(f"{directory} does not exist") from exc
    if available < total:
        raise NoSpace(f"{total} bytes needed in {directory}, {available} free")
    temporary = directory / f".{destination.name}.part-{secrets.token_hex(6)}"
    if progress:
        progress(0, total)
    try:
        # O_EXCL: never write through something placed there (a symlink) in the meantime.
        out = os.open(
            temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, st.st_mode & 0o777
        )
    except OSError as exc:
        raise CopyIOError(f"cannot create {temporary}: {exc.strerror}") from exc
    try:
        try:
            _copy_extents(src, out, total, progress, cancel, chunk_size, on_chunk)
            os.ftruncate(out, total)
            os.fsync(out)
        finally:
            os.close(out)
        if overwrite:
            temporary.replace(destination)
        else:
            # link() fails when the name exists, atomically, where a check then rename
            # would race with another writer.
            os.link(temporary, destination)
            temporary.unlink()
        _fsync_directory(directory)
    except BaseException as exc:
        temporary.unlink(missing_ok=True)
        if isinstance(exc, CopyError):
            raise
        if isinstance(exc, FileExistsError):
            raise DestinationExists(f"{destination} exists") from exc
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise NoSpace(f"{directory} filled up during the copy") from exc
        if isinstance(exc, OSError):
            raise CopyIOError(f"copying {source} to {destination}: {exc}") from exc
        raise
    log.info("disk copied", source=str(source), destination=str(destination), size=total)
    return total


def _copy_extents(
    src: int,
    out: int,
    total: int,
    progress: ProgressCallback | None,
    cancel: threading.Event | None,
    chunk_size: int,
    on_chunk: ChunkHook | None,
) -> None:
    zeros = bytes(chunk_size)
    for start, end in _data_extents(src, total):
        offset = start
        while offset < end:
            if cancel is not None and cancel.is_set():
                raise CopyCancelled("copy cancelled")
            want = min(chunk_size, end - offset)
            data = os.pread(src, want, offset)
            if len(data) != want:
                # The source shrank or vanished under us: what we have is not the disk.
                raise CopyIOError(f"short read at {offset}: the source changed during the copy")
            # A chunk of zeros stays a hole (memcmp-fast against a zero buffer).
            if data != zeros[:want]:
                written = 0
                while written < want:
                    written += os.pwrite(out, memoryview(data)[written:], offset + written)
            offset += want
            if progress:
                progress(offset, total)
            if on_chunk:
                on_chunk(offset, total)
    if progress:
        progress(total, total)


async def copy_file(
    source: Path,
    destination: Path,
    *,
    overwrite: bool = True,
    progress: ProgressCallback | None = None,
    chunk_size: int = CHUNK,
    on_chunk: ChunkHook | None = None,
    free_space: Callable[[Path], int] = free_bytes,
) -> int:
    """copy_file_sync in a thread. Cancelling the awaiting task stops the copy between
    chunks and waits for the thread to remove its temporary before re-raising."""
    cancel = threading.Event()
    work = functools.partial(
        copy_file_sync,
        source,
        destination,
        overwrite=overwrite,
        progress=progress,
        cancel=cancel,
        chunk_size=chunk_size,
        on_chunk=on_chunk,
        free_space=free_space,
    )
    future = asyncio.get_running_loop().run_in_executor(None, work)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        cancel.set()
        # The thread is not interruptible: wait for it to notice and clean up, so no
        # temporary outlives the cancel.
        await asyncio.wait({future})
        if not future.cancelled():
            future.exception()  # retrieved: the cancel is what the caller hears about
        raise
