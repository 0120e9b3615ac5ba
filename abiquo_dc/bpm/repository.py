"""The template repository as the BPM sees it: paths checked to stay inside it, where
converted disks go, and their temporary names.

Every function here touches the file system (an NFS mount in production) and blocks:
the BPM calls them in its own threads, never on the event loop.

A request names its disk relative to the repository. It is refused when it is absolute
or has a '..', and once resolved (symbolic links followed) it must still be under the
repository's root. The repository counts as there only while its mark file is: an NFS
mount point that is not mounted is an empty directory that must not be written to.

The converted disk of <dir>/<name>.<ext> in format F is <dir>/formats/F/<name>.<F's ext>
(a disk in <dir>/formats/G/ converted again goes to <dir>/formats/F/ too).
It is written into <dir>/formats/F/.bpm-tmp-<token>/ (the same file system, so renames
are atomic), synced, verified, and only then renamed into place: whatever is at the final
name was verified whole. A crash leaves at most a .bpm-tmp- directory, which the next
start removes.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from abiquo_dc.bpm.errors import BadPath, NotMounted, SourceMissing
from abiquo_dc.bpm.formats import SNIFF_BYTES, Target
from abiquo_dc.settings import RepositorySettings

TEMP_PREFIX = ".bpm-tmp-"
FORMATS_DIR = "formats"


@dataclass(frozen=True)
class SourceFile:
    # Resolved: no symbolic link left in it.
    path: Path
    # Relative to the repository's root, resolved too: one disk has one name.
    rel: str
    mtime: float
    head: bytes
    tail: bytes


@dataclass(frozen=True)
class Placement:
    """Where a source's conversion to one target format goes."""

    directory: Path
    path: Path
    rel: str


class Repository:
    def __init__(self, settings: RepositorySettings) -> None:
        self.settings = settings

    def root(self) -> Path:
        """The repository's resolved root; NotMounted when its mark file is missing."""
        root = Path(os.path.realpath(self.settings.path))
        if not (root / self.settings.mark_file).is_file():
            raise NotMounted(
                f"repository not mounted: {self.settings.path} has no {self.settings.mark_file}"
            )
        return root

    def open_source(self, rel: str) -> SourceFile:
        """The disk at `rel`, checked to be a regular file inside the repository, with its
        first and last bytes for telling its format."""
        relative = _relative(rel)
        root = self.root()
        real = Path(os.path.realpath(root / relative))
        if not real.is_relative_to(root):
            raise BadPath(f"{rel} leads out of the repository")
        if not real.exists():
            raise SourceMissing(f"{rel} is not in the repository")
        if not real.is_file():
            raise BadPath(f"{rel} is not a regular file")
        if any(part.startswith(TEMP_PREFIX) for part in real.relative_to(root).parts):
            raise BadPath(f"{rel} is a conversion still being written")
        modified = real.stat().st_mtime
        head, tail = self.read_edges(real)
        return SourceFile(
            path=real,
            rel=real.relative_to(root).as_posix(),
            mtime=modified,
            head=head,
            tail=tail,
        )

    def inside(self, path: str, *, base: Path) -> bool:
        """Whether `path` (relative to `base` when not absolute) resolves inside."""
        root = self.root()
        return Path(os.path.realpath(base / path)).is_relative_to(root)

    def placement(self, source: SourceFile, target: Target) -> Placement:
        root = self.root()
        template = source.path.parent
        if template.parent.name == FORMATS_DIR and template.parent.parent.is_relative_to(root):
            # A conversion converted again: beside the others of its template.
            template = template.parent.parent
        directory = template / FORMATS_DIR / target.format.value
        path = directory / f"{source.path.stem}.{target.extension}"
        return Placement(directory=directory, path=path, rel=path.relative_to(root).as_posix())

    # -- the files of one conversion ---------------------------------------------------------

    @staticmethod
    def read_edges(path: Path) -> tuple[bytes, bytes]:
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(SNIFF_BYTES)
            f.seek(max(0, size - SNIFF_BYTES))
            return head, f.read(SNIFF_BYTES)

    @staticmethod
    def modified(path: Path) -> float | None:
        """When the file was last written; None when it is not there."""
        try:
            return path.stat().st_mtime
        except FileNotFoundError:
            return None

    @staticmethod
    def make_temporary(placement: Placement) -> Path:
        """A fresh temporary directory beside the converted disk's final name."""
        placement.directory.mkdir(parents=True, exist_ok=True)
        temporary = placement.directory / f"{TEMP_PREFIX}{uuid.uuid4().hex[:16]}"
        temporary.mkdir()
        return temporary

    @staticmethod
    def remove(temporary: Path) -> None:
        shutil.rmtree(temporary, ignore_errors=True)

    @staticmethod
    def sync(temporary: Path) -> None:
        """Every file qemu-img wrote, on the disk (it may have left them in the cache)."""
        for entry in temporary.iterdir():
            fd = os.open(entry, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    @staticmethod
    def commit(temporary: Path, placement: Placement) -> None:
        """Move the verified files into place: the disk's own file last, after any it
        names (a flat VMDK's extent), so that it is never there without them."""
        main = temporary / placement.path.name
        others = [p for p in temporary.iterdir() if p != main]
        # An older conversion being replaced first stops being whole, then is replaced.
        placement.path.unlink(missing_ok=True)
        for entry in others:
            entry.replace(placement.directory / entry.name)
        main.replace(placement.path)
        _sync_directory(placement.directory)
        temporary.rmdir()

    @staticmethod
    def sweep(directory: Path) -> list[str]:
        """Remove the temporary files a crash left in a formats/<FORMAT> directory."""
        removed = []
        try:
            entries = list(directory.iterdir())
        except FileNotFoundError:
            return []
        for entry in entries:
            if entry.name.startswith(TEMP_PREFIX):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
                removed.append(entry.name)
        return removed


def _relative(rel: str) -> PurePosixPath:
    if not rel or "\x00" in rel:
        raise BadPath("a disk path is needed, relative to the repository")
    path = PurePosixPath(rel)
    if path.is_absolute():
        raise BadPath(f"{rel} is absolute: paths are relative to the repository")
    if ".." in path.parts:
        raise BadPath(f"{rel} climbs out with '..'")
    return path


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
