"""The disks group through a real thrift client: confinement, space, sparseness, progress."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import subprocess
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from thriftpy2.contrib.aio.protocol.binary import TAsyncBinaryProtocolFactory
from thriftpy2.contrib.aio.rpc import make_client
from thriftpy2.contrib.aio.transport.framed import TAsyncFramedTransportFactory

from aim.rimp import RimpGroup, mount_of, parse_mounts
from aim.server import ThriftServer
from aim.settings import AimSettings, ListenSettings, RepositorySettings
from tests.aim.conftest import serving

MiB = 1024 * 1024
VM = "6d1e1c0e-3b7a-4e57-9a55-2b0f1c3d4e5f"


@dataclass
class Layout:
    repository: Path
    datastore: Path
    outside: Path
    settings: AimSettings


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    repository, datastore, outside = tmp_path / "repo", tmp_path / "ds", tmp_path / "outside"
    for d in (repository / "1" / "templates", datastore, outside):
        d.mkdir(parents=True)
    (repository / ".abiquo_repository").touch()
    (repository / "1" / "templates" / "small.img").write_bytes(b"disk" * 1024)
    (outside / "secret.img").write_bytes(b"secret")
    settings = AimSettings(
        repository=RepositorySettings(path=str(repository)), datastores=[str(datastore)]
    )
    return Layout(repository, datastore, outside, settings)


def tmpfs(directory: Path, size: str) -> Iterator[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode()}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)


@pytest.fixture
def tiny(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB datastore, a real filesystem of its own."""
    yield from tmpfs(tmp_path / "tiny", "1m")


async def names(directory: Path) -> list[str]:
    return await asyncio.to_thread(lambda: sorted(p.name for p in directory.iterdir()))


def leftovers(*directories: Path) -> list[str]:
    return sorted(p.name for d in directories for p in d.rglob("*") if ".part-" in p.name)


async def code_of(call: Any) -> str:
    try:
        await call
    except Exception as exc:
        return str(exc.code)  # type: ignore[attr-defined]
    raise AssertionError("no exception")


def group(contract: ModuleType, layout: Layout, **kwargs: Any) -> RimpGroup:
    return RimpGroup(contract=contract, settings=layout.settings, **kwargs)


# -- configuration ------------------------------------------------------------------


async def test_configuration(contract: ModuleType, layout: Layout) -> None:
    async with serving(contract, [group(contract, layout)]) as client:
        await client.checkRimpConfiguration()
        (layout.repository / ".abiquo_repository").unlink()
        assert await code_of(client.checkRimpConfiguration()) == "RIMP-MARK"
        layout.settings.datastores.append(str(layout.outside / "gone"))
        (layout.repository / ".abiquo_repository").touch()
        assert await code_of(client.checkRimpConfiguration()) == "RIMP-DATASTORE"
        layout.settings.repository.path = str(layout.outside / "not-there")
        assert await code_of(client.checkRimpConfiguration()) == "RIMP-REPOSITORY"


async def test_datastores_interfaces_and_sizes(
    contract: ModuleType, layout: Layout, tiny: Path
) -> None:
    layout.settings.datastores.append(str(tiny))
    async with serving(contract, [group(contract, layout)]) as client:
        found = {d.path: d for d in await client.getDatastores()}
        assert found[str(tiny)].type == "tmpfs"
        assert found[str(tiny)].totalSize == MiB
        assert 0 < found[str(layout.datastore)].usableSize <= found[str(layout.datastore)].totalSize
        interfaces = {i.name: i for i in await client.getNetInterfaces()}
        assert interfaces["lo"].address == "127.0.0.1"
        assert interfaces["lo"].macAddress == "00:00:00:00:00:00"
        assert await client.getDiskFileSize("1/templates/small.img") == 4096
        path = str(layout.repository / "1/templates/small.img")
        assert await client.getDiskFileSize(path) == 4096
        assert await code_of(client.getDiskFileSize("1/none.img")) == "RIMP-NOT-FOUND"
        assert await code_of(client.getDiskFileSize("../outside/secret.img")) == "RIMP-PATH"
        assert await code_of(client.getDiskFileSize(str(layout.outside))) == "RIMP-PATH"


def test_mount_lookup_prefers_the_deepest_and_unescapes() -> None:
    mounts = parse_mounts(
        "/dev/vda / ext4 rw 0 0\nsrv:/x /mnt/my\\040disks nfs rw 0 0\ntmpfs /mnt tmpfs rw 0 0\n"
    )
    found = mount_of(Path("/mnt/my disks/ds"), mounts)
    assert found is not None and (found.device, found.type) == ("srv:/x", "nfs")
    other = mount_of(Path("/var/lib"), mounts)
    assert other is not None and other.type == "ext4"


# -- copies -------------------------------------------------------------------------


async def test_sparse_gigabyte_copy_stays_sparse(contract: ModuleType, layout: Layout) -> None:
    template = layout.repository / "1" / "templates" / "big.img"
    blocks = {0: b"M" * 512, 512 * MiB + 3: os.urandom(8192), 1024 * MiB - 4096: b"E" * 4096}

    def make() -> None:
        with template.open("wb") as f:
            f.truncate(1024 * MiB)
            for offset, data in blocks.items():
                f.seek(offset)
                f.write(data)

    await asyncio.to_thread(make)
    async with serving(contract, [group(contract, layout)]) as client:
        await client.copyFromRepositoryToDatastore("1/templates/big.img", str(layout.datastore), VM)
        progress = await client.getCopyProgress(VM)
        assert (progress.copiedBytes, progress.totalBytes, progress.done) == (
            1024 * MiB,
            1024 * MiB,
            True,
        )
        assert progress.error is None

    disk = layout.datastore / VM
    st = disk.stat()
    assert st.st_size == 1024 * MiB
    assert st.st_blocks * 512 < 2 * MiB

    def read_back() -> dict[int, bytes]:
        with disk.open("rb") as f:
            out = {}
            for offset, data in blocks.items():
                f.seek(offset)
                out[offset] = f.read(len(data))
            return out

    assert await asyncio.to_thread(read_back) == blocks
    assert leftovers(layout.datastore) == []


async def test_escapes_are_refused_and_the_server_keeps_serving(
    contract: ModuleType, layout: Layout
) -> None:
    (layout.repository / "1" / "escape.img").symlink_to(layout.outside / "secret.img")
    (layout.datastore / "out").symlink_to(layout.outside)
    ds = str(layout.datastore)
    async with serving(contract, [group(contract, layout)]) as client:
        calls = [
            client.copyFromRepositoryToDatastore("../outside/secret.img", ds, VM),
            client.copyFromRepositoryToDatastore("1/../../outside/secret.img", ds, VM),
            client.copyFromRepositoryToDatastore(str(layout.outside / "secret.img"), ds, VM),
            client.copyFromRepositoryToDatastore("/etc/passwd", ds, VM),
            client.copyFromRepositoryToDatastore("1/escape.img", ds, VM),
            client.copyFromRepositoryToDatastore("1/templates/small.img", str(layout.outside), VM),
            client.copyFromRepositoryToDatastore("1/templates/small.img", f"{ds}/out", VM),
            client.copyFromRepositoryToDatastore("1/templates/small.img", "relative", VM),
            client.copyFromRepositoryToDatastore("1/templates/small.img\0x", ds, VM),
            client.copyFromDatastoreToRepository(VM, ds, "../outside/stolen.img"),
            client.instanceDisk(str(layout.outside / "secret.img"), f"{ds}/copy.img"),
            client.instanceDisk(f"{ds}/x.img", str(layout.outside / "copy.img")),
            client.renameDisk(f"{ds}/out/secret.img", f"{ds}/mine.img"),
            client.deleteVirtualImageFromDatastore(str(layout.outside), VM),
        ]
        for call in calls:
            assert await code_of(call) == "RIMP-PATH"
        # A symlink named like the VM, pointing out, is not written through.
        (layout.datastore / VM).symlink_to(layout.outside / "victim.img")
        assert (
            await code_of(client.copyFromRepositoryToDatastore("1/templates/small.img", ds, VM))
            == "RIMP-PATH"
        )
        (layout.datastore / VM).unlink()
        # Still serving, and a good copy works.
        await client.copyFromRepositoryToDatastore("1/templates/small.img", ds, VM)
    assert (layout.datastore / VM).read_bytes() == b"disk" * 1024
    assert sorted(p.name for p in layout.outside.iterdir()) == ["secret.img"]
    assert (layout.outside / "secret.img").read_bytes() == b"secret"


async def test_invalid_uuid(contract: ModuleType, layout: Layout) -> None:
    ds = str(layout.datastore)
    async with serving(contract, [group(contract, layout)]) as client:
        bad_names = ["", "../x", "not-a-uuid", "{" + VM + "}", VM.replace("-", "")]
        # A VM's other disks are <uuid>-<n>, n from 1 to 99, written plainly.
        bad_names += [f"{VM}-0", f"{VM}-01", f"{VM}-100", f"{VM}-x", f"{VM}-", f"{VM}-1/.."]
        for bad in bad_names:
            assert (
                await code_of(
                    client.copyFromRepositoryToDatastore("1/templates/small.img", ds, bad)
                )
                == "RIMP-UUID"
            ), bad
        # The second disk of the same VM.
        await client.copyFromRepositoryToDatastore("1/templates/small.img", ds, f"{VM}-1")
        await client.deleteVirtualImageFromDatastore(ds, f"{VM}-1")
    assert not (layout.datastore / f"{VM}-1").exists()


async def test_no_space_leaves_nothing(contract: ModuleType, layout: Layout, tiny: Path) -> None:
    layout.settings.datastores.append(str(tiny))
    (layout.repository / "2MiB.img").write_bytes(b"\1" * 2 * MiB)
    async with serving(contract, [group(contract, layout)]) as client:
        code = await code_of(client.copyFromRepositoryToDatastore("2MiB.img", str(tiny), VM))
        assert code == "RIMP-NO-SPACE"
        assert await names(tiny) == []
        progress = await client.getCopyProgress(VM)
        assert progress.done and progress.error and progress.copiedBytes == 0
        # Fits in the free space check, but tmpfs fills up mid-copy (its metadata):
        # ENOSPC while writing also ends as RIMP-NO-SPACE, with the temporary removed.
        (layout.repository / "almost.img").write_bytes(b"\2" * (MiB - 4096))
        await client.copyFromRepositoryToDatastore("almost.img", str(tiny), VM)
        other = str(uuid.uuid4())
        code = await code_of(client.copyFromRepositoryToDatastore("almost.img", str(tiny), other))
        assert code == "RIMP-NO-SPACE"
        assert await names(tiny) == [VM]


@contextlib.asynccontextmanager
async def two_clients(contract: ModuleType, rimp: RimpGroup) -> AsyncIterator[tuple[Any, Any]]:
    """One server, two connections: a copy on one, progress questions on the other."""
    server = ThriftServer(
        contract=contract,
        groups=[rimp],
        listen=ListenSettings(host="127.0.0.1", port=0),
        partial=True,
    )
    await server.start()
    clients = [
        await make_client(
            contract.Aim,
            "127.0.0.1",
            server.port,
            trans_factory=TAsyncFramedTransportFactory(),
            proto_factory=TAsyncBinaryProtocolFactory(),  # type: ignore[no-untyped-call]
            timeout=30_000,
        )
        for _ in range(2)
    ]
    try:
        yield clients[0], clients[1]
    finally:
        for c in clients:
            c.close()  # type: ignore[no-untyped-call]
        await server.stop_accepting()
        await server.drain()
        await server.close()


class Gate:
    """An on_chunk hook that stops the copy after its first chunks until released."""

    def __init__(self, hold_after: int) -> None:
        self.hold_after = hold_after
        self.reached = threading.Event()
        self.release = threading.Event()

    def __call__(self, copied: int, total: int) -> None:
        if copied >= self.hold_after and not self.release.is_set():
            self.reached.set()
            self.release.wait(10)


async def test_progress_seen_mid_copy_from_another_client(
    contract: ModuleType, layout: Layout
) -> None:
    await asyncio.to_thread((layout.repository / "dense.img").write_bytes, b"\7" * 32 * MiB)
    gate = Gate(hold_after=8 * MiB)
    rimp = group(contract, layout, chunk_size=4 * MiB, on_chunk=gate)
    async with two_clients(contract, rimp) as (copier, watcher):
        copy = asyncio.get_running_loop().create_task(
            copier.copyFromRepositoryToDatastore("dense.img", str(layout.datastore), VM)
        )
        try:
            await asyncio.to_thread(gate.reached.wait, 10)
            progress = await watcher.getCopyProgress(VM)
            assert (progress.copiedBytes, progress.totalBytes) == (8 * MiB, 32 * MiB)
            assert not progress.done
            # The disk is not there under its name until it is complete.
            assert not (layout.datastore / VM).exists()
            assert len(leftovers(layout.datastore)) == 1
            # A second copy or a delete for the same VM waits its turn.
            busy = watcher.copyFromRepositoryToDatastore("dense.img", str(layout.datastore), VM)
            assert await code_of(busy) == "RIMP-BUSY"
            assert (
                await code_of(watcher.deleteVirtualImageFromDatastore(str(layout.datastore), VM))
                == "RIMP-BUSY"
            )
        finally:
            gate.release.set()
            await copy
        done = await watcher.getCopyProgress(VM)
        assert (done.copiedBytes, done.done) == (32 * MiB, True)
    assert (layout.datastore / VM).stat().st_size == 32 * MiB
    assert leftovers(layout.datastore) == []


async def test_failed_copy_leaves_no_temporary(contract: ModuleType, layout: Layout) -> None:
    await asyncio.to_thread((layout.repository / "dense.img").write_bytes, b"\7" * 8 * MiB)

    def broken(copied: int, total: int) -> None:
        raise OSError(errno.EIO, "injected I/O error")

    def vanish(copied: int, total: int) -> None:
        # The template is truncated and removed from under the copy.
        os.truncate(layout.repository / "dense.img", 0)
        (layout.repository / "dense.img").unlink()

    ds = str(layout.datastore)
    async with serving(contract, [group(contract, layout, chunk_size=MiB, on_chunk=broken)]) as c:
        assert await code_of(c.copyFromRepositoryToDatastore("dense.img", ds, VM)) == "RIMP-IO"
        progress = await c.getCopyProgress(VM)
        assert progress.done and "injected" in (progress.error or "")
    assert list(layout.datastore.iterdir()) == []
    async with serving(contract, [group(contract, layout, chunk_size=MiB, on_chunk=vanish)]) as c:
        assert await code_of(c.copyFromRepositoryToDatastore("dense.img", ds, VM)) == "RIMP-IO"
        assert (
            await code_of(c.copyFromRepositoryToDatastore("dense.img", ds, VM)) == "RIMP-NOT-FOUND"
        )
        assert await code_of(c.getCopyProgress(str(uuid.uuid4()))) == "RIMP-NOT-FOUND"
    assert list(layout.datastore.iterdir()) == []


async def test_close_cancels_a_running_copy_cleanly(contract: ModuleType, layout: Layout) -> None:
    await asyncio.to_thread((layout.repository / "dense.img").write_bytes, b"\7" * 8 * MiB)
    gate = Gate(hold_after=MiB)
    rimp = group(contract, layout, chunk_size=MiB, on_chunk=gate)
    async with two_clients(contract, rimp) as (copier, _):
        copy = asyncio.get_running_loop().create_task(
            copier.copyFromRepositoryToDatastore("dense.img", str(layout.datastore), VM)
        )
        await asyncio.to_thread(gate.reached.wait, 10)
        closing = asyncio.get_running_loop().create_task(rimp.close())
        await asyncio.sleep(0.05)
        gate.release.set()
        await closing
        assert await code_of(copy) == "RIMP-CANCELLED"
    assert list(layout.datastore.iterdir()) == []


# -- within the datastores, and back to the repository ------------------------------------


async def test_instance_rename_delete_and_back(contract: ModuleType, layout: Layout) -> None:
    ds = layout.datastore
    async with serving(contract, [group(contract, layout)]) as client:
        await client.copyFromRepositoryToDatastore("1/templates/small.img", str(ds), VM)
        await client.instanceDisk(f"{ds}/{VM}", f"{ds}/instance.img")
        assert (ds / "instance.img").read_bytes() == b"disk" * 1024
        assert await code_of(client.instanceDisk(f"{ds}/{VM}", f"{ds}/instance.img")) == (
            "RIMP-EXISTS"
        )
        assert await code_of(client.instanceDisk(f"{ds}/none", f"{ds}/x.img")) == "RIMP-NOT-FOUND"

        await client.renameDisk(f"{ds}/instance.img", f"{ds}/renamed.img")
        assert not (ds / "instance.img").exists() and (ds / "renamed.img").exists()
        assert await code_of(client.renameDisk(f"{ds}/renamed.img", f"{ds}/{VM}")) == "RIMP-EXISTS"
        assert (ds / "renamed.img").exists()
        assert await code_of(client.renameDisk(f"{ds}/gone.img", f"{ds}/x.img")) == "RIMP-NOT-FOUND"

        await client.copyFromDatastoreToRepository(VM, str(ds), "1/instances/mine.img")
        assert (layout.repository / "1/instances/mine.img").read_bytes() == b"disk" * 1024
        assert (
            await code_of(client.copyFromDatastoreToRepository(VM, str(ds), "1/instances/mine.img"))
            == "RIMP-EXISTS"
        )

        await client.deleteVirtualImageFromDatastore(str(ds), VM)
        await client.deleteVirtualImageFromDatastore(str(ds), VM)  # absent: fine
        assert not (ds / VM).exists()
    assert leftovers(ds, layout.repository) == []


async def test_rename_across_filesystems(contract: ModuleType, layout: Layout, tiny: Path) -> None:
    layout.settings.datastores.append(str(tiny))
    (layout.datastore / "a.img").write_bytes(b"a" * 1000)
    async with serving(contract, [group(contract, layout)]) as client:
        await client.renameDisk(str(layout.datastore / "a.img"), str(tiny / "a.img"))
    assert (tiny / "a.img").read_bytes() == b"a" * 1000
    assert not (layout.datastore / "a.img").exists()
