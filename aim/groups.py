"""How the AIM's thrift service is made of groups of methods.

Each group (disks, VLANs, iSCSI, domains, pools, metrics, events) is a class whose public
coroutine methods carry the names of the thrift methods it implements; it raises its own
thrift exception (see `raise_`). A group with resources opens them in `start()` and
closes them in `close()`. The handler the thrift processor calls is assembled from the
groups, and refuses to start when a method of the contract has no implementation or two.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from types import ModuleType
from typing import Any, NoReturn, Protocol


class Group(Protocol):
    # The thrift method names this group implements.
    METHODS: tuple[str, ...]

    async def start(self) -> None: ...

    async def close(self) -> None: ...


def raise_(exception: type[Any], code: str, message: str) -> NoReturn:
    """Raise a thrift exception of the contract with its stable code and message."""
    raise exception(code=code, message=message)


class Handler:
    """The object the thrift processor calls: one attribute per method of the contract."""

    def __init__(self, service: Any, groups: Sequence[Any], *, partial: bool = False) -> None:
        """`partial` lets a test serve some groups only; a server never sets it."""
        wanted = set(service.thrift_services)
        found: dict[str, Callable[..., Awaitable[Any]]] = {}
        for group in groups:
            for name in group.METHODS:
                if name in found:
                    raise ValueError(f"{name} is implemented twice")
                found[name] = getattr(group, name)
        missing = wanted - set(found)
        extra = set(found) - wanted
        if extra or (missing and not partial):
            raise ValueError(f"contract mismatch: missing {sorted(missing)}, extra {sorted(extra)}")
        for name, method in found.items():
            setattr(self, name, method)


def contract_exception(contract: ModuleType, name: str) -> type[Any]:
    exception: type[Any] = getattr(contract, name)
    return exception
