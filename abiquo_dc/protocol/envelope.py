"""The envelope every message shares: its wire tag, version, id and correlation id.

A message is a msgspec Struct tagged by `type`, with a `version` (raised when a field
changes meaning; new optional fields keep the version and are ignored by older readers),
its own `message_id`, which consumers use to recognise a redelivery, and the
`correlation_id` of the work that caused it.
"""

from __future__ import annotations

from typing import ClassVar, TypeVar

import msgspec

from abiquo_runtime.correlation import ensure_correlation_id, new_id


def _new_id() -> str:
    return new_id()


class Message(msgspec.Struct, kw_only=True, tag_field="type", frozen=True):
    """Base of every message; subclasses set `tag` to their wire name."""

    version: int = 1
    message_id: str = msgspec.field(default_factory=_new_id)
    correlation_id: str = ""

    # Where the datacenter's link sends a message of this type toward central, if anywhere.
    outbound_queue: ClassVar[str | None] = None
    # A request whose handler returns only when its work is done, however long that takes
    # (VM jobs): the link gives it no handler timeout and settles the delivery after it.
    long_running: ClassVar[bool] = False


M = TypeVar("M", bound=Message)


def stamped(message: M) -> M:
    """`message` with the current correlation id (a new one outside any work) if it has none."""
    if message.correlation_id:
        return message
    return msgspec.structs.replace(message, correlation_id=ensure_correlation_id())
