"""aim.copying: sparse, atomic, space-checked, cancellable copies."""

from __future__ import annotations

import asyncio
import errno
import os
import threading
from pathlib import Path

import pytest

from aim.copying import (
    CopyCancelled,
    CopyIOError,
    DestinationExists,
    NoSpace,
    SourceMissing,
    copy_file,
    copy_file_sync,
)

MiB = 1024 * 1024


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".part-" in p.name)


def sparse(path: Path, size: int, blocks: dict[int, bytes]) -> None:
    with path.open("wb") as f:
        f.truncate(size)
        for offset, data in blocks.items():
            f.seek(offset)
            f.write(data)


def test_sparse_file_stays_sparse(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    blocks = {0: b"A" * 4096, 300 * MiB + 5: os.urandom(70_000), 1024 * MiB - 4096: b"Z" * 4096}
    sparse(src, 1024 * MiB, blocks)
    seen: list[tuple[int, int]] = []
    assert copy_file_sync(src, dst, progress=lambda c, t: seen.append((c, t))) == 1024 * MiB
    st = dst.stat()
    assert st.st_size == 1024 * MiB
    assert st.st_blocks * 512 < 4 * MiB
    with dst.open("rb") as f:
        for offset, data in blocks.items():
            f.seek(offset)
            assert f.read(len(data)) == data
    assert seen[0] == (0, 1024 * MiB) and seen[-1] == (1024 * MiB, 1024 * MiB)
    assert leftovers(tmp_path) == []


def test_without_seek_data_zero_chunks_stay_holes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    sparse(src, 64 * MiB, {10 * MiB: b"q" * 100})
    real_lseek = os.lseek

    def no_seek_data(fd: int, pos: int, how: int) -> int:
        if how in (os.SEEK_DATA, os.SEEK_HOLE):
            raise OSError(errno.EINVAL, "unsupported")
        return real_lseek(fd, pos, how)

    monkeypatch.setattr("aim.copying.os.lseek", no_seek_data)
    copy_file_sync(src, dst, chunk_size=MiB)
    assert dst.read_bytes() == src.read_bytes()
    assert dst.stat().st_blocks * 512 <= 2 * MiB


def test_file_of_only_holes_and_empty_file(tmp_path: Path) -> None:
    for size in (0, 10 * MiB):
        src, dst = tmp_path / f"s{size}", tmp_path / f"d{size}"
        sparse(src, size, {})
        copy_file_sync(src, dst)
        assert dst.stat().st_size == size and dst.stat().st_blocks == 0


def test_dense_content_identical_and_mode_kept(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(os.urandom(3 * MiB + 17))
    src.chmod(0o640)
    copy_file_sync(src, dst, chunk_size=MiB)
    assert dst.read_bytes() == src.read_bytes()
    assert dst.stat().st_mode & 0o777 == 0o640


def test_missing_source(tmp_path: Path) -> None:
    with pytest.raises(SourceMissing):
        copy_file_sync(tmp_path / "nope", tmp_path / "dst")
    assert list(tmp_path.iterdir()) == []


def test_no_space_is_refused_before_writing(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_bytes(b"x" * 1000)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(NoSpace):
        copy_file_sync(src, out / "dst", free_space=lambda _: 999)
    assert list(out.iterdir()) == []


def test_overwrite_or_refuse(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(b"new")
    dst.write_bytes(b"old")
    with pytest.raises(DestinationExists):
        copy_file_sync(src, dst, overwrite=False)
    assert dst.read_bytes() == b"old"
    copy_file_sync(src, dst)
    assert dst.read_bytes() == b"new"
    assert leftovers(tmp_path) == []


def test_io_error_mid_copy_removes_the_temporary(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(b"y" * 4 * MiB)

    def broken(copied: int, total: int) -> None:
        assert leftovers(tmp_path), "the temporary exists while copying"
        raise OSError(errno.EIO, "injected")

    with pytest.raises(CopyIOError):
        copy_file_sync(src, dst, chunk_size=MiB, on_chunk=broken)
    assert not dst.exists()
    assert leftovers(tmp_path) == []


def test_source_shrinking_mid_copy_is_an_error(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(b"y" * 4 * MiB)

    def vanish(copied: int, total: int) -> None:
        os.truncate(src, 0)
        src.unlink()

    with pytest.raises(CopyIOError):
        copy_file_sync(src, dst, chunk_size=MiB, on_chunk=vanish)
    assert list(tmp_path.iterdir()) == []


def test_cancel_event(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(b"y" * 4 * MiB)
    cancel = threading.Event()
    with pytest.raises(CopyCancelled):
        copy_file_sync(src, dst, chunk_size=MiB, cancel=cancel, on_chunk=lambda c, t: cancel.set())
    assert list(tmp_path.iterdir()) == [src]


async def test_cancelling_the_task_waits_for_the_cleanup(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(b"y" * 8 * MiB)
    started = threading.Event()
    release = threading.Event()

    def hold(copied: int, total: int) -> None:
        started.set()
        release.wait(5)

    async def run() -> int:
        return await copy_file(src, dst, chunk_size=MiB, on_chunk=hold)

    task = asyncio.get_running_loop().create_task(run())
    await asyncio.to_thread(started.wait, 5)
    task.cancel()
    await asyncio.sleep(0.01)
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    # By the time the cancel is heard, the thread has removed its temporary.
    assert await asyncio.to_thread(lambda: list(tmp_path.iterdir())) == [src]
