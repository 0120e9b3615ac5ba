"""The conversions of one repository: one running, the rest waiting in order.

The repository's NFS I/O is the bottleneck: two conversions at once take as long as one
after the other, and slow every VM deploy copying from it meanwhile. So one worker per
repository takes them first in, first out.

A conversion is asked for by one request or more: the same disk asked in the same
format while it waits or runs joins it instead of being queued again. Each request
keeps its own id (central's conversion id, or one made for a request from vfactory) and
is told of the outcome on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import structlog

from abiquo_dc.bpm.journal import Request
from abiquo_dc.bpm.qemu import Cancellation
from abiquo_dc.protocol.definitions import DiskFormat
from abiquo_dc.protocol.templates import ConversionState
from abiquo_runtime.tasks import Supervisor

Key = tuple[str, DiskFormat]

_log = structlog.get_logger("abiquo.dc.bpm")


@dataclass(frozen=True)
class Done:
    """What a finished conversion gives: the disk, relative to the repository."""

    path: str
    format: DiskFormat


@dataclass(eq=False)
class Asker:
    request: Request
    # vfactory waits on this for its answer (None for central's requests: they are
    # answered by notifications, and for requests taken back from the journal).
    answer: asyncio.Future[Done] | None = None


@dataclass(eq=False)
class Conversion:
    key: Key
    source_path: str
    # As the first request declared it (each request's was checked against the disk).
    source_format: DiskFormat
    target_format: DiskFormat
    askers: dict[str, Asker] = field(default_factory=dict)
    state: ConversionState = ConversionState.QUEUED
    progress: float = 0.0
    # Taken back from the journal after a crash interrupted it.
    retried: bool = False
    cancellation: Cancellation = field(default_factory=Cancellation)
    # Set once it ran and its files are settled (made, or removed).
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def id(self) -> str:
        """The id it is listed under: its first asker's."""
        return next(iter(self.askers), "")

    @property
    def running(self) -> bool:
        return self.state is not ConversionState.QUEUED


class ConversionQueue:
    def __init__(
        self, *, run: Callable[[Conversion], Awaitable[None]], tasks: Supervisor, name: str
    ) -> None:
        self._run = run
        self._waiting: deque[Conversion] = deque()
        self._wake = asyncio.Event()
        self.current: Conversion | None = None
        self._worker = tasks.spawn(self._work(), name=f"queue:{name}", forever=True)

    def __iter__(self) -> Iterator[Conversion]:
        """The running conversion first, then the waiting ones in their order."""
        if self.current is not None:
            yield self.current
        yield from self._waiting

    def __len__(self) -> int:
        return len(self._waiting) + (self.current is not None)

    def find(self, key: Key) -> Conversion | None:
        return next((c for c in self if c.key == key), None)

    def asked(self, request_id: str) -> Conversion | None:
        return next((c for c in self if request_id in c.askers), None)

    def position(self, conversion: Conversion) -> int:
        """0 for the running one, 1 for the next, and so on."""
        return next(i for i, c in enumerate(self) if c is conversion)

    def add(self, conversion: Conversion) -> None:
        self._waiting.append(conversion)
        self._wake.set()

    def withdraw(self, conversion: Conversion) -> bool:
        """Take a waiting conversion out; False when it is running (or gone)."""
        try:
            self._waiting.remove(conversion)
        except ValueError:
            return False
        return True

    async def close(self) -> None:
        """Stop the worker: a running conversion is interrupted (`run` sees it cancelled)."""
        self._worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._worker

    async def _work(self) -> None:
        while True:
            while not self._waiting:
                self._wake.clear()
                await self._wake.wait()
            conversion = self._waiting.popleft()
            self.current = conversion
            try:
                await self._run(conversion)
            except Exception:
                # `run` answers every failure itself; one that escapes must not end the
                # repository's worker.
                _log.exception("conversion run failed", conversion=conversion.id)
            finally:
                self.current = None
