"""Each template's status in each enterprise's repository, and where it is kept.

Redis in production (redis_status.py), so that the status of a download outlives the
process (a download still DOWNLOADING at start is resumed); `MemoryStatusStore` is the
all-in-one's in-process twin. One contract test suite runs against both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import msgspec

from abiquo_dc.protocol.templates import TemplateDefinition, TemplateStatus
from abiquo_dc.settings import RedisSettings


class TemplateState(msgspec.Struct, frozen=True, kw_only=True):
    """What is known of one template of one enterprise."""

    ovf_id: str
    status: TemplateStatus
    # 0 to 100 while DOWNLOADING; 100 once DOWNLOAD.
    progress: float = 0.0
    # Why it is in ERROR.
    error: str = ""
    # The template's directory in its enterprise's one ("" until it is known).
    dir_name: str = ""
    # Once the template is there (DOWNLOAD).
    template: TemplateDefinition | None = None


class StatusStore(Protocol):
    async def open(self) -> None:
        """Connect; TemporaryError when the store cannot be reached."""
        ...

    async def close(self) -> None: ...

    async def put(self, enterprise_id: str, state: TemplateState) -> None: ...

    async def get(self, enterprise_id: str, ovf_id: str) -> TemplateState | None: ...

    async def all(self, enterprise_id: str) -> list[TemplateState]:
        """The enterprise's templates, in ovf_id order."""
        ...

    async def remove(self, enterprise_id: str, ovf_id: str) -> bool: ...

    async def enterprises(self) -> list[str]:
        """The enterprises with at least one template recorded."""
        ...


class MemoryStatusStore:
    """The store in this process, for the all-in-one: a restart rescans the disk."""

    def __init__(self) -> None:
        self._states: dict[str, dict[str, TemplateState]] = {}

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def put(self, enterprise_id: str, state: TemplateState) -> None:
        self._states.setdefault(enterprise_id, {})[state.ovf_id] = state

    async def get(self, enterprise_id: str, ovf_id: str) -> TemplateState | None:
        return self._states.get(enterprise_id, {}).get(ovf_id)

    async def all(self, enterprise_id: str) -> list[TemplateState]:
        states = self._states.get(enterprise_id, {})
        return [states[k] for k in sorted(states)]

    async def remove(self, enterprise_id: str, ovf_id: str) -> bool:
        states = self._states.get(enterprise_id, {})
        gone = states.pop(ovf_id, None) is not None
        if not states:
            self._states.pop(enterprise_id, None)
        return gone

    async def enterprises(self) -> list[str]:
        return sorted(self._states)


def status_store(redis: RedisSettings, dc_uuid: str) -> Callable[[], StatusStore]:
    """The AM's status store: Redis, or in this process when no URL is set (all-in-one)."""
    if not redis.url:
        return MemoryStatusStore
    from abiquo_dc.am.redis_status import RedisStatusStore

    url, prefix = redis.url, redis.prefix
    return lambda: RedisStatusStore(url, prefix=prefix, dc_uuid=dc_uuid)
