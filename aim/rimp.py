"""The disks group (Abiquo's "Rimp"): the repository, the datastores, and copies between.

Every client-given path is confined (aim.paths) to the repository or the configured
datastores before anything is touched; every filesystem call runs in a thread (the
repository is NFS: a stat can hang); copies go through aim.copying (space checked first,
atomic, sparse, cancellable) as tasks of this group's Supervisor, so a copy outlives a
dropped client connection, its progress stays visible, and close() stops it cleanly.

Error codes: RIMP-REPOSITORY, RIMP-MARK, RIMP-DATASTORE (configuration); RIMP-PATH (a
path escapes or is malformed); RIMP-UUID (not a canonical UUID); RIMP-NOT-FOUND;
RIMP-EXISTS; RIMP-NO-SPACE; RIMP-BUSY (a copy for that VM is under way); RIMP-CANCELLED;
RIMP-IO; RIMP-NET (interfaces unreadable).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn, TypeVar

import structlog

from abiquo_runtime.tasks import Supervisor
from aim import paths
from aim.copying import (
    CHUNK,
    ChunkHook,
    CopyCancelled,
    CopyError,
    DestinationExists,
    NoSpace,
    SourceMissing,
    copy_file,
)
from aim.groups import raise_
from aim.settings import AimSettings

log = structlog.get_logger("aim.rimp")

T = TypeVar("T")

# Finished copies whose progress is kept for getCopyProgress; the oldest go first.
KEEP_FINISHED = 1000
IP_TIMEOUT = 10.0


@dataclass
class _Copy:
    uuid: str
    copied: int = 0
    total: int = 0
    done: bool = False
    error: str | None = None


@dataclass(frozen=True)
class Mount:
    device: str
    path: str
    type: str


def _unescape_mount(field: str) -> str:
    # /proc/self/mounts writes space, tab, newline and backslash as \ooo octal.
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mounts(text: str) -> list[Mount]:
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3:
            mounts.append(Mount(_unescape_mount(fields[0]), _unescape_mount(fields[1]), fields[2]))
    return mounts


def mount_of(path: Path, mounts: list[Mount]) -> Mount | None:
    """The mount `path` (resolved) lives on: the longest mount point above it, the last
    mounted when one is mounted over another."""
    best: Mount | None = None
    for mount in mounts:
        if path.is_relative_to(mount.path) and (
            best is None or len(Path(mount.path).parts) >= len(Path(best.path).parts)
        ):
            best = mount
    return best


def parse_ip_addr(text: str) -> list[tuple[str, str, str]]:
    """(name, first IPv4, MAC) from `ip -j addr`."""
    result = []
    for link in json.loads(text):
        ipv4 = next(
            (a.get("local", "") for a in link.get("addr_info", []) if a.get("family") == "inet"),
            "",
        )
        result.append((link.get("ifname", ""), ipv4, link.get("address", "")))
    return result


def _sys_interfaces() -> list[tuple[str, str, str]]:
    # Without iproute2: names and MACs from sysfs; the addresses stay unknown.
    result = []
    for entry in sorted(Path("/sys/class/net").iterdir()):
        try:
            mac = (entry / "address").read_text().strip()
        except OSError:
            mac = ""
        result.append((entry.name, "", mac))
    return result


class RimpGroup:
    METHODS = (
        "checkRimpConfiguration",
        "getDiskFileSize",
        "getDatastores",
        "getNetInterfaces",
        "copyFromRepositoryToDatastore",
        "deleteVirtualImageFromDatastore",
        "copyFromDatastoreToRepository",
        "instanceDisk",
        "renameDisk",
        "getCopyProgress",
    )

    def __init__(
        self,
        *,
        contract: ModuleType,
        settings: AimSettings,
        chunk_size: int = CHUNK,
        on_chunk: ChunkHook | None = None,
    ) -> None:
        """`chunk_size` and `on_chunk` (called in the copying thread after each chunk)
        exist for tests: to watch, slow down or break a copy."""
        self._contract = contract
        self._settings = settings
        self._chunk_size = chunk_size
        self._on_chunk = on_chunk
        self._tasks = Supervisor("aim.rimp")
        self._copies: dict[str, _Copy] = {}

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        await self._tasks.close()

    # -- helpers ------------------------------------------------------------------

    def _fail(self, code: str, message: str) -> NoReturn:
        raise_(self._contract.RimpException, code, message)

    async def _off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a filesystem function in a thread; its path and OS errors become codes."""
        try:
            return await asyncio.to_thread(fn, *args)
        except paths.PathEscape as exc:
            self._fail("RIMP-PATH", str(exc))
        except FileNotFoundError as exc:
            self._fail("RIMP-NOT-FOUND", f"{exc.filename}: not found")
        except FileExistsError as exc:
            self._fail("RIMP-EXISTS", f"{exc.filename}: exists")
        except OSError as exc:
            self._fail("RIMP-IO", str(exc))

    def _uuid(self, value: str) -> str:
        """A VM's disk name: its UUID (the first disk) or <uuid>-<n>, n 1-99 (the others)."""
        # Canonical form only: the name becomes a file name, and uuid.UUID also accepts
        # braces, "urn:uuid:" and other spellings of the same value.
        base, dash, index = value.rpartition("-") if value.count("-") == 5 else (value, "", "")
        if dash and not (index.isdigit() and 1 <= int(index) <= 99 and index[0] != "0"):
            self._fail("RIMP-UUID", f"{value!r} is not a UUID or <uuid>-<disk number>")
        try:
            canonical = str(uuid.UUID(base))
        except ValueError:
            canonical = ""
        if canonical != base.lower() or not base:
            self._fail("RIMP-UUID", f"{value!r} is not a UUID or <uuid>-<disk number>")
        return value

    def _repository(self, path: str) -> Path:
        return paths.confine(self._settings.repository.path, path)

    def _datastore_dir(self, path: str) -> Path:
        _, directory = paths.confine_any(self._settings.datastores, path, allow_root=True)
        if not directory.is_dir():
            raise FileNotFoundError(errno.ENOENT, "no such datastore directory", str(directory))
        return directory

    def _vm_disk(self, datastore_path: str, vm: str) -> Path:
        return paths.child(self._datastore_dir(datastore_path), vm)

    def _in_datastores(self, path: str) -> Path:
        return paths.confine_any(self._settings.datastores, path)[1]

    async def _copy(
        self, key: str | None, source: Path, destination: Path, *, overwrite: bool
    ) -> None:
        """Run one copy as a supervised task and wait for it; its errors become codes."""
        if key is not None:
            previous = self._copies.get(key)
            if previous is not None and not previous.done:
                self._fail("RIMP-BUSY", f"a copy for {key} is under way")
        record = _Copy(uuid=key or "")
        if key is not None:
            self._copies.pop(key, None)
            self._copies[key] = record
            self._forget_old()

        def progress(copied: int, total: int) -> None:
            # Called from the copying thread: plain attribute stores, read by the loop.
            record.copied, record.total = copied, total

        async def run() -> CopyError | None:
            try:
                await copy_file(
                    source,
                    destination,
                    overwrite=overwrite,
                    progress=progress,
                    chunk_size=self._chunk_size,
                    on_chunk=self._on_chunk,
                )
            except CopyError as exc:
                # Returned, not raised: an expected failure is the caller's to report,
                # not a task fault for the Supervisor to log with a traceback.
                record.error = str(exc)
                return exc
            except asyncio.CancelledError:
                record.error = "cancelled"
                raise
            finally:
                record.done = True
            return None

        task = self._tasks.spawn(run(), name=f"copy:{key or destination.name}")
        # Shielded: a client that goes away does not stop the copy; close() does.
        try:
            failure = await asyncio.shield(task)
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if me is not None and me.cancelling():
                raise  # this call itself is cancelled: the copy goes on
            # The copy was stopped (close() at shutdown): the client hears it, rather
            # than waiting for an answer that will not come.
            self._fail("RIMP-CANCELLED", f"the copy to {destination} was cancelled")
        if failure is None:
            return
        log.warning(
            "copy failed", source=str(source), destination=str(destination), error=str(failure)
        )
        code = {
            SourceMissing: "RIMP-NOT-FOUND",
            NoSpace: "RIMP-NO-SPACE",
            DestinationExists: "RIMP-EXISTS",
            CopyCancelled: "RIMP-CANCELLED",
        }.get(type(failure), "RIMP-IO")
        self._fail(code, str(failure))

    def _forget_old(self) -> None:
        finished = [k for k, c in self._copies.items() if c.done]
        for key in finished[: max(0, len(self._copies) - KEEP_FINISHED)]:
            del self._copies[key]

    # -- configuration ----------------------------------------------------------------

    async def checkRimpConfiguration(self) -> None:
        problem = await asyncio.to_thread(self._check)
        if problem is not None:
            self._fail(*problem)

    def _check(self) -> tuple[str, str] | None:
        repository = Path(self._settings.repository.path)
        if not repository.is_dir():
            return "RIMP-REPOSITORY", f"the repository {repository} is not a directory"
        mark = repository / self._settings.repository.mark_file
        if not mark.exists():
            # An empty mount point (NFS not mounted) looks like a directory too.
            return "RIMP-MARK", f"{mark} is missing: is the repository mounted?"
        for datastore in self._settings.datastores:
            if not Path(datastore).is_dir():
                return "RIMP-DATASTORE", f"the datastore {datastore} is not a directory"
            # Really write: access(W_OK) says yes to root on a read-only mount.
            try:
                fd, name = tempfile.mkstemp(prefix=".abiquo-check-", dir=datastore)
                os.close(fd)
                Path(name).unlink()
            except OSError as exc:
                return "RIMP-DATASTORE", f"the datastore {datastore} is not writable: {exc}"
        return None

    async def getDiskFileSize(self, path: str) -> int:
        def size() -> int:
            if path.startswith("/"):
                roots = [self._settings.repository.path, *self._settings.datastores]
                _, resolved = paths.confine_any(roots, path)
            else:
                resolved = self._repository(path)
            return resolved.stat().st_size

        return await self._off_loop(size)

    async def getDatastores(self) -> list[Any]:
        def read() -> list[Any]:
            mounts = parse_mounts(Path("/proc/self/mounts").read_text())
            found = []
            for datastore in self._settings.datastores:
                resolved = Path(os.path.realpath(datastore))
                if not resolved.is_dir():
                    raise NotADirectoryError(errno.ENOTDIR, "not a datastore", datastore)
                mount = mount_of(resolved, mounts)
                st = os.statvfs(resolved)
                found.append(
                    self._contract.Datastore(
                        device=mount.device if mount else "",
                        path=datastore,
                        type=mount.type if mount else "",
                        totalSize=st.f_blocks * st.f_frsize,
                        usableSize=st.f_bavail * st.f_frsize,
                    )
                )
            return found

        try:
            return await asyncio.to_thread(read)
        except OSError as exc:
            self._fail("RIMP-DATASTORE", str(exc))

    async def getNetInterfaces(self) -> list[Any]:
        try:
            found = parse_ip_addr(await self._ip_addr())
        except (OSError, ValueError, TimeoutError) as exc:
            log.warning("ip -j addr failed, reading sysfs", error=str(exc))
            try:
                found = await asyncio.to_thread(_sys_interfaces)
            except OSError as sys_exc:
                self._fail("RIMP-NET", str(sys_exc))
        return [
            self._contract.NetInterface(name=name, address=ipv4, macAddress=mac)
            for name, ipv4, mac in found
        ]

    async def _ip_addr(self) -> str:
        process = await asyncio.create_subprocess_exec(
            "ip",
            "-j",
            "addr",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(process.communicate(), IP_TIMEOUT)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise
        if process.returncode != 0:
            raise OSError(f"ip exited {process.returncode}: {err.decode(errors='replace')}")
        return out.decode()

    # -- copies -----------------------------------------------------------------------

    async def copyFromRepositoryToDatastore(
        self, repositoryPath: str, datastorePath: str, virtualMachineUUID: str
    ) -> None:
        vm = self._uuid(virtualMachineUUID)

        def resolve() -> tuple[Path, Path]:
            return self._repository(repositoryPath), self._vm_disk(datastorePath, vm)

        source, destination = await self._off_loop(resolve)
        # A redeploy replaces the VM's disk: overwriting is atomic and never partial.
        await self._copy(vm, source, destination, overwrite=True)

    async def copyFromDatastoreToRepository(
        self, virtualMachineUUID: str, datastorePath: str, repositoryPath: str
    ) -> None:
        vm = self._uuid(virtualMachineUUID)

        def resolve() -> tuple[Path, Path]:
            source = self._vm_disk(datastorePath, vm)
            destination = self._repository(repositoryPath)
            # The repository's folders (enterprise/datacenter/...) are made on demand;
            # they are inside the repository (confined above).
            destination.parent.mkdir(parents=True, exist_ok=True)
            return source, destination

        source, destination = await self._off_loop(resolve)
        # A template in the repository is never replaced by an instance.
        await self._copy(vm, source, destination, overwrite=False)

    async def instanceDisk(self, sourcePath: str, destinationPath: str) -> None:
        def resolve() -> tuple[Path, Path]:
            return self._in_datastores(sourcePath), self._in_datastores(destinationPath)

        source, destination = await self._off_loop(resolve)
        await self._copy(None, source, destination, overwrite=False)

    async def deleteVirtualImageFromDatastore(
        self, datastorePath: str, virtualMachineUUID: str
    ) -> None:
        vm = self._uuid(virtualMachineUUID)
        running = self._copies.get(vm)
        if running is not None and not running.done:
            self._fail("RIMP-BUSY", f"a copy for {vm} is under way")

        def delete() -> None:
            disk = self._vm_disk(datastorePath, vm)
            # Idempotent: the DC retries deletes, and an absent disk is the goal.
            with contextlib.suppress(FileNotFoundError):
                disk.unlink()

        await self._off_loop(delete)

    async def renameDisk(self, oldPath: str, newPath: str) -> None:
        def resolve() -> tuple[Path, Path]:
            return self._in_datastores(oldPath), self._in_datastores(newPath)

        old, new = await self._off_loop(resolve)

        def rename() -> bool:
            """Rename without replacing; False when the two are on different filesystems."""
            if not old.exists():
                raise FileNotFoundError(errno.ENOENT, "no such disk", str(old))
            try:
                # link() refuses an existing name atomically (no RENAME_NOREPLACE in os).
                os.link(old, new)
            except OSError as exc:
                if exc.errno == errno.EXDEV:
                    return False
                if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK):
                    raise
                # No hard links here (or a directory): check, then rename; a writer
                # racing between the two is the one case this cannot refuse.
                if os.path.lexists(new):
                    raise FileExistsError(errno.EEXIST, "exists", str(new)) from exc
                old.rename(new)
                return True
            old.unlink()
            return True

        if await self._off_loop(rename):
            return
        # Another datastore, another filesystem: copy, then remove the original.
        await self._copy(None, old, new, overwrite=False)
        await self._off_loop(old.unlink)

    async def getCopyProgress(self, virtualMachineUUID: str) -> Any:
        vm = self._uuid(virtualMachineUUID)
        record = self._copies.get(vm)
        if record is None:
            self._fail("RIMP-NOT-FOUND", f"no copy known for {vm}")
        return self._contract.CopyProgress(
            virtualMachineUUID=vm,
            copiedBytes=record.copied,
            totalBytes=record.total,
            done=record.done,
            error=record.error,
        )
