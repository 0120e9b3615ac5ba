"""The correlation id that follows one piece of work through HTTP, the bus and AMQP.

It lives in a context variable, so every task started while it is set inherits it, and
it is bound into structlog's context so that every log line carries it.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator

import structlog

_current: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "abiquo_correlation_id", default=None
)


def new_id() -> str:
    """A random 128-bit id in hex: a uuid4's randomness without building a UUID object,
    which costs more than the rest of a bus delivery."""
    return os.urandom(16).hex()


def new_correlation_id() -> str:
    return new_id()


def current_correlation_id() -> str | None:
    return _current.get()


def ensure_correlation_id() -> str:
    """The current id, or a new one when this work did not come with any."""
    return _current.get() or new_correlation_id()


def adopt(correlation_id: str) -> None:
    """Make `correlation_id` current for the rest of this task, without a reset.

    For a worker task that owns its context (a bus listener): it adopts the id of each
    message it takes, and only when it differs from the one it has, which is cheap.
    """
    if _current.get() != correlation_id:
        _current.set(correlation_id)
        structlog.contextvars.bind_contextvars(correlation_id=correlation_id)


@contextlib.contextmanager
def correlation(correlation_id: str | None) -> Iterator[str]:
    """Run a block under `correlation_id` (a new one when None or empty)."""
    cid = correlation_id or new_correlation_id()
    token = _current.set(cid)
    with structlog.contextvars.bound_contextvars(correlation_id=cid):
        try:
            yield cid
        finally:
            _current.reset(token)
