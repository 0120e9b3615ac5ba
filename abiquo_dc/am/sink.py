"""Writing a stream to a file without holding it in memory nor blocking the loop.

Chunks are gathered up to a block and each block is written in the executor while the
next is being received: one write in flight at a time, so memory stays at about two
blocks whatever the size of the stream. Blocks of zeros are skipped instead of written
(the file gets a hole there, and a final truncate gives it its full length): a disk
image is mostly zeros, and a sparse file takes neither the time nor the space to write.
Each block's writeback to the disk is started as soon as it is written (Linux), and it
leaves the page cache soon after.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path
from typing import cast

from abiquo_dc.am.errors import TooBig

BLOCK = 1024 * 1024
_ZEROS = bytes(BLOCK)
_ADVISE = hasattr(os, "posix_fadvise")
_KEEP_CACHED = 8 * BLOCK
_SYNC_FILE_RANGE_WRITE = 2


def _find_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """Linux's sync_file_range(2), which Python's os module does not offer; None where
    the C library has none."""
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return cast(Callable[[int, int, int, int], int], function)


_sync_file_range = _find_sync_file_range()


def _write_block(fd: int, block: bytes | bytearray, offset: int) -> None:
    """Write `block` at `offset`, leaving out the pieces (aligned on BLOCK in the file)
    that are all zeros."""
    view = memoryview(block)
    position = 0
    while position < len(block):
        size = min(len(block) - position, BLOCK - (offset + position) % BLOCK)
        if block[position : position + size] != _ZEROS[:size]:
            piece = view[position : position + size]
            at = offset + position
            while piece:
                written = os.pwrite(fd, piece, at)
                piece = piece[written:]
                at += written
        position += size
    if _sync_file_range is not None:
        # Its writeback starts now, while the next block comes in: the disk works while
        # the network does, and the final fsync finds little left to write.
        _sync_file_range(fd, offset, len(block), _SYNC_FILE_RANGE_WRITE)
    if _ADVISE and offset >= _KEEP_CACHED:
        # What was written a few blocks ago is on its way to the disk: out of the page
        # cache with it, so that a disk of many gigabytes does not push out everything
        # else the machine keeps in memory.
        os.posix_fadvise(fd, offset - _KEEP_CACHED, len(block), os.POSIX_FADV_DONTNEED)


def _finish(fd: int, size: int, sync: bool) -> None:
    try:
        # Trailing zero blocks were skipped: the file takes its length from here.
        os.ftruncate(fd, size)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


class FileSink:
    """Appends to `path` from `offset` (0 truncates it); `limit` bounds its final size.

    Use as `sink = await FileSink.open(...)`, `await sink.write(chunk)` for each chunk,
    then `await sink.close()`, or `await sink.abort()` on failure.
    """

    def __init__(
        self, fd: int, *, offset: int, limit: int | None, executor: Executor | None, what: str
    ) -> None:
        self._fd = fd
        self._executor = executor
        self._limit = limit
        self._what = what
        self._buffer = bytearray()
        self._pending: asyncio.Future[None] | None = None
        # Where the next block goes, and how long the file is with the buffer included.
        self._written = offset
        self.size = offset

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        offset: int = 0,
        limit: int | None = None,
        executor: Executor | None = None,
        what: str = "",
    ) -> FileSink:
        flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | (0 if offset else os.O_TRUNC)
        loop = asyncio.get_running_loop()
        fd = await loop.run_in_executor(executor, os.open, path, flags, 0o644)
        return cls(fd, offset=offset, limit=limit, executor=executor, what=what or path.name)

    async def write(self, chunk: bytes | memoryview) -> None:
        self.size += len(chunk)
        if self._limit is not None and self.size > self._limit:
            raise TooBig(f"{self._what} is bigger than the {self._limit} bytes allowed")
        self._buffer += chunk
        if len(self._buffer) >= BLOCK:
            await self._flush()

    async def _flush(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            await pending
        if not self._buffer:
            return
        block, self._buffer = self._buffer, bytearray()
        offset, self._written = self._written, self._written + len(block)
        loop = asyncio.get_running_loop()
        self._pending = loop.run_in_executor(self._executor, _write_block, self._fd, block, offset)

    async def close(self, *, sync: bool = True) -> None:
        """Write what is left, give the file its length, fsync and close it."""
        await self._flush()
        if self._pending is not None:
            pending, self._pending = self._pending, None
            await pending
        fd, self._fd = self._fd, -1
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, _finish, fd, self.size, sync)

    async def abort(self) -> None:
        """Close on a failure: what was received, buffered included, stays in the file
        (a resume starts after it; the caller deletes the file when it is not wanted).

        Writes still in the executor are waited for, so that the next attempt never races
        them; when the caller is being cancelled meanwhile, the file is closed once they
        end. Safe to call after close.
        """
        pending, self._pending = self._pending, None
        fd, self._fd = self._fd, -1
        if fd < 0:
            return
        loop = asyncio.get_running_loop()
        writes = {pending} if pending is not None else set()
        if self._buffer:
            block, self._buffer = self._buffer, bytearray()
            writes.add(loop.run_in_executor(self._executor, _write_block, fd, block, self._written))
        if not writes:
            os.close(fd)
            return
        left = len(writes)

        def close_after(done: asyncio.Future[None]) -> None:
            nonlocal left
            if not done.cancelled():
                done.exception()  # retrieved: the abort has its own reason
            left -= 1
            if left == 0:
                os.close(fd)

        for write in writes:
            write.add_done_callback(close_after)
        await asyncio.wait(writes)
