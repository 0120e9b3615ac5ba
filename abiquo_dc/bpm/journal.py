"""The conversion journal: every accepted request, in an SQLite file in the DC's state
directory, so that a crash loses none.

A request is written before it is acknowledged (QUEUED), its attempts are counted when
it starts, and its outcome is written when it ends. At the next start, the requests
without an outcome are the ones a crash interrupted or left waiting: those that had
started once are retried once, those that had started twice fail ("interrupted twice"),
and those that never started are queued again in their order. The outcomes are kept for
a week, so that a request delivered again after it ended is answered with its outcome
instead of being run again.

One thread owns the connection: the loop never waits on the disk. The file is WAL with
synchronous=FULL, so a write that returned survives a crash of the machine.

Without a state directory (`path` None) nothing is written and nothing survives a
restart.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from abiquo_dc.protocol.definitions import DiskFormat
from abiquo_dc.protocol.templates import ConversionState
from abiquo_runtime.errors import TemporaryError

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    body BLOB NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    outcome TEXT,
    detail TEXT NOT NULL DEFAULT '',
    finished REAL
);
"""

RETENTION = 7 * 86400.0
# The outcomes kept in memory are pruned of the expired ones past this many.
_PRUNE_AT = 10_000


class JournalError(TemporaryError):
    """The journal cannot be written (a full or failing disk): nothing is accepted."""

    code = "BPM-JOURNAL"


class Request(msgspec.Struct, frozen=True, kw_only=True):
    """What is kept of an accepted request."""

    id: str
    source_path: str
    source_format: DiskFormat
    target_format: DiskFormat
    # Central is told of it (ConvertTemplateDisk); vfactory's requests are answered on
    # the bus instead, and after a crash only made again, for vfactory to find.
    notify: bool = True


@dataclass(frozen=True)
class Unfinished:
    request: Request
    # Times it started: 1 is a crash mid-conversion, 2 a second one.
    attempts: int


@dataclass(frozen=True)
class Outcome:
    state: ConversionState
    # DONE: the converted disk, relative to the repository; FAILED: "<code>: <message>".
    detail: str
    target_format: DiskFormat
    # When it ended (time.time()).
    at: float = 0.0


_decoder = msgspec.json.Decoder(Request)


class ConversionJournal:
    def __init__(self, path: Path | None, *, retention: float = RETENTION) -> None:
        self.path = path
        self.retention = retention
        self._thread: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None
        self.unfinished: list[Unfinished] = []
        self.outcomes: dict[str, Outcome] = {}

    async def open(self) -> None:
        if self.path is None:
            return
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bpm-journal")
        try:
            await self._call(self._open_and_load)
        except JournalError:
            self._thread.shutdown(wait=False)
            self._thread = None
            raise

    def _open_and_load(self) -> None:
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(_SCHEMA)
        db.execute(
            "DELETE FROM requests WHERE outcome IS NOT NULL AND finished < ?",
            (time.time() - self.retention,),
        )
        for body, attempts, outcome, detail, finished in db.execute(
            "SELECT body, attempts, outcome, detail, finished FROM requests ORDER BY seq"
        ):
            request = _decoder.decode(body)
            if outcome is None:
                self.unfinished.append(Unfinished(request, attempts))
            else:
                self.outcomes[request.id] = Outcome(
                    ConversionState(outcome), detail, request.target_format, finished
                )
        self._db = db

    async def close(self) -> None:
        if self._thread is None:
            return
        try:
            await self._call(self._close_db)
        finally:
            self._thread.shutdown(wait=False)
            self._thread = None

    def _close_db(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    # -- what the BPM records ------------------------------------------------------------

    async def accepted(self, request: Request) -> None:
        body = msgspec.json.encode(request)
        self.outcomes.pop(request.id, None)
        await self._write(
            lambda db: db.execute(
                "INSERT INTO requests (id, body) VALUES (?, ?) ON CONFLICT (id) DO UPDATE"
                " SET body = excluded.body, attempts = 0, outcome = NULL, detail = '',"
                " finished = NULL",
                (request.id, body),
            )
        )

    async def started(self, ids: list[str]) -> None:
        await self._write(
            lambda db: db.executemany(
                "UPDATE requests SET attempts = attempts + 1 WHERE id = ?", [(i,) for i in ids]
            )
        )

    async def stopped(self, ids: list[str]) -> None:
        """Interrupted by an orderly stop, not a crash: that start does not count."""
        await self._write(
            lambda db: db.executemany(
                "UPDATE requests SET attempts = MAX(attempts - 1, 0) WHERE id = ?",
                [(i,) for i in ids],
            )
        )

    async def finished(self, ids: list[str], outcome: Outcome) -> None:
        """Record how these requests ended (kept in memory too: the only record of the
        requests answered at once, which are never journaled as accepted)."""
        now = time.time()
        outcome = dataclasses.replace(outcome, at=now)
        if len(self.outcomes) >= _PRUNE_AT:
            cutoff = now - self.retention
            self.outcomes = {i: o for i, o in self.outcomes.items() if o.at >= cutoff}
        for i in ids:
            self.outcomes[i] = outcome
        await self._write(
            lambda db: db.executemany(
                "UPDATE requests SET outcome = ?, detail = ?, finished = ? WHERE id = ?",
                [(outcome.state.value, outcome.detail, now, i) for i in ids],
            )
        )

    # -- the thread ----------------------------------------------------------------------

    async def _write(self, op: Callable[[sqlite3.Connection], Any]) -> None:
        if self.path is None:
            return

        def transaction() -> None:
            db = self._db
            if db is None:
                raise sqlite3.ProgrammingError("the journal is closed")
            with db:
                db.execute("BEGIN IMMEDIATE")
                op(db)

        # Shielded: a caller cancelled mid-write must not leave memory and file apart.
        await asyncio.shield(self._call(transaction))

    async def _call(self, fn: Callable[[], T]) -> T:
        if self._thread is None:
            raise JournalError("the conversion journal is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._thread, fn)
        except (sqlite3.Error, OSError) as exc:
            raise JournalError(f"the conversion journal {self.path}: {exc}") from exc
