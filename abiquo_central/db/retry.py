"""Transactions a concurrent one made fail, and that succeed when tried again."""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError

# MariaDB/MySQL: chosen as a deadlock's victim; waited too long for a lock.
ER_LOCK_DEADLOCK, ER_LOCK_WAIT_TIMEOUT = 1213, 1205


def deadlocked(exc: DBAPIError) -> bool:
    """Whether the database rolled the transaction back as a deadlock's victim or after
    waiting too long for a lock: nothing was done, and trying again may succeed."""
    args: tuple[object, ...] = tuple(getattr(exc.orig, "args", None) or ())
    return bool(args) and args[0] in (ER_LOCK_DEADLOCK, ER_LOCK_WAIT_TIMEOUT)
