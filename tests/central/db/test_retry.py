"""Which failed transactions are worth trying again."""

from __future__ import annotations

from sqlalchemy.exc import OperationalError

from abiquo_central.db.retry import deadlocked


def _error(*args: object) -> OperationalError:
    return OperationalError("UPDATE ...", {}, Exception(*args))


def test_a_deadlock_or_a_lock_wait_is_tried_again_nothing_else() -> None:
    assert deadlocked(_error(1213, "Deadlock found when trying to get lock"))
    assert deadlocked(_error(1205, "Lock wait timeout exceeded"))
    assert not deadlocked(_error(2006, "MySQL server has gone away"))
    assert not deadlocked(_error())
    assert not deadlocked(_error("database is locked"))
