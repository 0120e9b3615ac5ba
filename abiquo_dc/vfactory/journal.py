"""The job journal: what vfactory has done, kept in an SQLite file that outlives the process.

Every task is written here before its first job acts, and every change of a job's state
after (START before acting; DONE, FAILED, the rollback states after) together with the
notification that says so, in one transaction: the notification outbox. A notification
leaves the outbox only once the broker confirmed it. So after a crash the journal tells,
for every task that did not finish, which job was in the middle of acting (START without
an end), and which notifications may not have reached central.

Writes from many tasks at once are grouped: a single writer thread owns the connection and
commits whatever is waiting in one transaction, so a thousand concurrent deploys cost a
few fsyncs, not thousands, and the event loop never waits on the disk. The journal is
WAL with synchronous=FULL: a commit that returned survives a crash of the machine, not
only of the process.

What is read back (the tasks not finished, the outbox) is read once, at open; after that
the in-memory records are authoritative and the file is written only.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import msgspec

from abiquo_dc.protocol import codec
from abiquo_dc.protocol.jobs import JobNotification, JobState, VirtualFactoryTask
from abiquo_runtime.errors import TemporaryError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY,
    body BLOB NOT NULL,
    phase TEXT NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    task_id TEXT NOT NULL REFERENCES tasks(task_id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    state TEXT
);
CREATE INDEX IF NOT EXISTS jobs_by_task ON jobs(task_id);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id TEXT NOT NULL,
    body BLOB NOT NULL
);
"""

_task_decoder = msgspec.json.Decoder(VirtualFactoryTask)
_notification_decoder = msgspec.json.Decoder(JobNotification)


class JournalError(TemporaryError):
    """The journal could not be written (a full or failing disk): nothing may act."""

    code = "VF-JOURNAL"


class Phase(StrEnum):
    RUNNING = "RUNNING"
    ROLLING_BACK = "ROLLING_BACK"
    FINISHED = "FINISHED"


@dataclass
class TaskRecord:
    task: VirtualFactoryTask
    phase: Phase
    # Each job's last reported state; None: not started.
    states: dict[str, JobState | None] = field(default_factory=dict)

    def state(self, job_id: str) -> JobState | None:
        return self.states.get(job_id)


@dataclass(frozen=True)
class Pending:
    """A notification in the outbox: sent, perhaps, but not confirmed."""

    seq: int
    notification: JobNotification


_Op = Callable[[sqlite3.Connection], Any]


class JobJournal:
    def __init__(self, path: Path, *, retention: float = 7 * 86400.0) -> None:
        """`retention`: how long a finished task is remembered (seconds), so that central
        sending it again that late is still recognised and not run twice."""
        self.path = path
        self.retention = retention
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vf-journal")
        self._db: sqlite3.Connection | None = None
        # None: the writer's last item.
        self._queue: asyncio.Queue[tuple[_Op, asyncio.Future[Any]] | None] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self.records: dict[str, TaskRecord] = {}
        # The finished tasks' ids, with when they finished: recognised, never run again.
        self.finished: dict[str, float] = {}
        self.outbox: list[Pending] = []
        self.commits = 0

    # -- open and close --------------------------------------------------------------------

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._thread, self._open_and_load)
        except (sqlite3.Error, OSError) as exc:
            raise JournalError(f"the job journal {self.path} cannot be opened: {exc}") from exc
        self._writer = loop.create_task(self._write_loop(), name="vfactory:journal-writer")

    def _open_and_load(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        db.executescript(_SCHEMA)
        cutoff = time.time() - self.retention
        db.execute("DELETE FROM tasks WHERE phase = ? AND updated < ?", (Phase.FINISHED, cutoff))
        for task_id, body, phase, updated in db.execute(
            "SELECT task_id, body, phase, updated FROM tasks"
        ):
            if phase == Phase.FINISHED:
                self.finished[task_id] = updated
                continue
            self.records[task_id] = TaskRecord(task=_task_decoder.decode(body), phase=Phase(phase))
        for task_id, job_id, state in db.execute(
            "SELECT task_id, job_id, state FROM jobs ORDER BY task_id, position"
        ):
            if task_id in self.records:
                self.records[task_id].states[job_id] = JobState(state) if state else None
        self.outbox = [
            Pending(seq, _notification_decoder.decode(body))
            for seq, body in db.execute("SELECT seq, body FROM outbox ORDER BY seq")
        ]
        self._db = db

    async def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            # The writer ends at this mark, after writing what was queued before it.
            self._queue.put_nowait(None)
            await asyncio.gather(writer, return_exceptions=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._close_db)
        self._thread.shutdown(wait=True)

    def _close_db(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    # -- what vfactory records -----------------------------------------------------------

    def known(self, task_id: str) -> bool:
        return task_id in self.records or task_id in self.finished

    async def begin(self, task: VirtualFactoryTask) -> TaskRecord:
        """Record a new task before any of its jobs acts."""
        record = TaskRecord(task=task, phase=Phase.RUNNING, states={j.id: None for j in task.jobs})
        self.records[task.task_id] = record
        body = codec.encode(task)
        now = time.time()

        def op(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO tasks (task_id, body, phase, updated) VALUES (?, ?, ?, ?)",
                (task.task_id, body, Phase.RUNNING, now),
            )
            db.executemany(
                "INSERT INTO jobs (job_id, task_id, position, state) VALUES (?, ?, ?, NULL)",
                [(job.id, task.task_id, i) for i, job in enumerate(task.jobs)],
            )

        try:
            await self._submit(op)
        except BaseException:
            del self.records[task.task_id]
            raise
        return record

    async def record(self, record: TaskRecord, notification: JobNotification) -> Pending:
        """A job's new state and its notification, in the outbox until confirmed."""
        body = codec.encode(notification)

        def op(db: sqlite3.Connection) -> int:
            db.execute(
                "UPDATE jobs SET state = ? WHERE job_id = ?",
                (notification.state, notification.job_id),
            )
            cursor = db.execute(
                "INSERT INTO outbox (task_id, body) VALUES (?, ?)", (record.task.task_id, body)
            )
            seq = cursor.lastrowid
            assert seq is not None
            return seq

        seq: int = await self._submit(op)
        record.states[notification.job_id] = notification.state
        return Pending(seq, notification)

    async def set_phase(self, record: TaskRecord, phase: Phase) -> None:
        now = time.time()
        task_id = record.task.task_id

        def op(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE tasks SET phase = ?, updated = ? WHERE task_id = ?", (phase, now, task_id)
            )
            if phase == Phase.FINISHED:
                # Its jobs' states were told to central: only the task's id is kept.
                db.execute("DELETE FROM jobs WHERE task_id = ?", (task_id,))
                db.execute("UPDATE tasks SET body = x'' WHERE task_id = ?", (task_id,))

        await self._submit(op)
        record.phase = phase
        if phase == Phase.FINISHED:
            self.records.pop(task_id, None)
            self.finished[task_id] = now

    async def prune(self) -> int:
        """Forget the tasks finished longer ago than the retention; returns how many."""
        cutoff = time.time() - self.retention
        old = [task_id for task_id, at in self.finished.items() if at < cutoff]
        if not old:
            return 0

        def op(db: sqlite3.Connection) -> None:
            db.executemany(
                "DELETE FROM tasks WHERE task_id = ? AND phase = ?",
                [(task_id, Phase.FINISHED) for task_id in old],
            )

        await self._submit(op)
        for task_id in old:
            self.finished.pop(task_id, None)
        return len(old)

    def confirmed(self, pending: Pending) -> None:
        """The broker has the notification: it leaves the outbox.

        Not waited for: should the process die before this is written, the notification
        is sent again at the next start, with its message id, which central recognises.
        """

        def op(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM outbox WHERE seq = ?", (pending.seq,))

        if self._writer is None:
            return
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_swallow)
        self._queue.put_nowait((op, future))

    # -- the writer ----------------------------------------------------------------------

    async def _submit(self, op: _Op) -> Any:
        if self._writer is None:
            raise JournalError("the job journal is closed")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((op, future))
        # Shielded: a caller cancelled mid-commit must not leave memory and file apart;
        # the write finishes (or fails) whatever the caller does.
        return await asyncio.shield(future)

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        closing = False
        while not closing:
            items = [await self._queue.get()]
            while not self._queue.empty():
                items.append(self._queue.get_nowait())
            closing = None in items
            batch = [item for item in items if item is not None]
            if not batch:
                continue
            ops = [op for op, _ in batch]
            try:
                outcomes = await asyncio.shield(
                    loop.run_in_executor(self._thread, self._apply, ops)
                )
            except asyncio.CancelledError:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(JournalError("the job journal closed mid-write"))
                raise
            except (sqlite3.Error, OSError) as exc:
                outcomes = [exc] * len(batch)
            self.commits += 1
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if future.done():
                    continue
                if isinstance(outcome, (sqlite3.Error, OSError)):
                    future.set_exception(
                        JournalError(f"the job journal {self.path} cannot be written: {outcome}")
                    )
                else:
                    future.set_result(outcome)

    def _apply(self, ops: list[_Op]) -> list[Any]:
        """Run `ops` in one transaction; if one fails, each on its own, so that one bad
        write fails alone. Returns each op's result or its error."""
        db = self._db
        if db is None:
            raise sqlite3.ProgrammingError("the journal is closed")
        try:
            return self._transaction(db, ops)
        except sqlite3.Error:
            if len(ops) == 1:
                raise
        outcomes: list[Any] = []
        for op in ops:
            try:
                outcomes.extend(self._transaction(db, [op]))
            except sqlite3.Error as exc:
                outcomes.append(exc)
        return outcomes

    @staticmethod
    def _transaction(db: sqlite3.Connection, ops: list[_Op]) -> list[Any]:
        db.execute("BEGIN IMMEDIATE")
        try:
            results = [op(db) for op in ops]
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return results


def _swallow(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # a lost outbox deletion only means a repeated notification
