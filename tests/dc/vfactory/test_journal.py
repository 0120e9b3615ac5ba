"""The job journal: what it keeps across a reopen, and writes grouped into few commits."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from abiquo_dc.protocol.jobs import JobNotification, JobState
from abiquo_dc.vfactory.journal import JobJournal, JournalError, Phase
from tests.dc.vfactory.harness import definition, deploy


def notification(task_id: str, job_id: str, state: JobState) -> JobNotification:
    return JobNotification(
        dc_uuid="dc",
        task_id=task_id,
        job_id=job_id,
        job_type="CONFIGURE",  # type: ignore[arg-type]
        vm_uuid="vm",
        state=state,
        at=datetime.now(UTC),
    )


async def test_what_is_journaled_is_there_after_a_reopen(tmp_path: Path) -> None:
    journal = JobJournal(tmp_path / "j.sqlite")
    await journal.open()
    t = deploy(definition())
    record = await journal.begin(t)
    started = await journal.record(record, notification(t.task_id, t.jobs[0].id, JobState.START))
    journal.confirmed(started)
    done = await journal.record(record, notification(t.task_id, t.jobs[0].id, JobState.DONE))
    await journal.close()

    again = JobJournal(tmp_path / "j.sqlite")
    await again.open()
    [back] = again.records.values()
    assert back.task == t
    assert back.phase is Phase.RUNNING
    assert back.states == {t.jobs[0].id: JobState.DONE, t.jobs[1].id: None}
    # START was confirmed; DONE was not, and waits to be sent again, as it was.
    assert [p.notification for p in again.outbox] == [done.notification]
    await again.set_phase(back, Phase.FINISHED)
    assert again.known(t.task_id) and not again.records
    await again.close()


async def test_concurrent_writes_share_commits(tmp_path: Path) -> None:
    journal = JobJournal(tmp_path / "j.sqlite")
    await journal.open()
    tasks = [deploy(definition()) for _ in range(200)]
    await asyncio.gather(*(journal.begin(t) for t in tasks))
    # 200 tasks, each durable when begin() returned, in far fewer transactions.
    assert journal.commits < 50
    await journal.close()
    with sqlite3.connect(tmp_path / "j.sqlite") as db:
        assert db.execute("SELECT count(*) FROM tasks").fetchone() == (200,)
        assert db.execute("SELECT count(*) FROM jobs").fetchone() == (400,)


async def test_one_bad_write_fails_alone(tmp_path: Path) -> None:
    journal = JobJournal(tmp_path / "j.sqlite")
    await journal.open()
    t = deploy(definition())
    await journal.begin(t)
    journal.records.clear()  # as if it were not known: the insert will clash
    good = deploy(definition())
    results = await asyncio.gather(journal.begin(t), journal.begin(good), return_exceptions=True)
    assert isinstance(results[0], JournalError)
    assert not isinstance(results[1], BaseException)
    assert good.task_id in journal.records
    await journal.close()


async def test_a_journal_that_cannot_be_opened_says_so(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    journal = JobJournal(tmp_path / "file" / "j.sqlite")
    with pytest.raises(JournalError, match="cannot be opened"):
        await journal.open()


async def test_finished_tasks_are_forgotten_after_their_retention(tmp_path: Path) -> None:
    journal = JobJournal(tmp_path / "j.sqlite", retention=3600.0)
    await journal.open()
    old, recent = deploy(definition()), deploy(definition())
    for t in (old, recent):
        await journal.set_phase(await journal.begin(t), Phase.FINISHED)
    journal.finished[old.task_id] -= 7200.0  # finished two hours ago
    assert await journal.prune() == 1
    assert not journal.known(old.task_id) and journal.known(recent.task_id)
    await journal.close()
    with sqlite3.connect(tmp_path / "j.sqlite") as db:
        rows = db.execute("SELECT task_id, length(body) FROM tasks").fetchall()
    # Of a finished task only its id is kept, not its body.
    assert rows == [(recent.task_id, 0)]
