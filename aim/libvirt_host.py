"""The AIM's one libvirt connection: blocking calls in threads of their own, events on the loop.

libvirt's API blocks (a hung qemu can stall a call for minutes), so every call runs in a
dedicated thread pool, bounded by a timeout, and libvirt's errors become the contract's
LibvirtException with a stable code.

Events (domain lifecycle callbacks, and the test driver's dispatch timer) need an event
implementation registered with libvirt before a connection opens; libvirt takes exactly
one per process and refuses a second (`RuntimeError: Event loop is already registered`).
`_EventBridge` is that one registration: it hands each request to libvirtaio's asyncio
implementation bound to the loop of the latest `start()`, which lets a process whose loop
changes (the tests: one loop per test) keep receiving events.

When libvirtd is unreachable, at start or later, the AIM keeps running and listening: it
reconnects in place with backoff, logging each failure, and meanwhile answers the methods
that need libvirt with LibvirtException LIBVIRT-UNAVAILABLE (see LibvirtHost). Not
listening until connected was the other choice, rejected: the datacenter could not tell
a host whose libvirtd is down from one that is off, and the disk copies, VLANs and iSCSI,
which need no libvirt, would be refused too.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import itertools
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import libvirt
import libvirtaio
import structlog

from abiquo_runtime.tasks import Supervisor
from aim import contract as contract_module
from aim.groups import raise_

T = TypeVar("T")

log = structlog.get_logger("aim.libvirt")

# A missing pool or volume is as much "not found" as a missing domain.
_NOT_FOUND = frozenset(
    {libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_NO_STORAGE_POOL, libvirt.VIR_ERR_NO_STORAGE_VOL}
)
_INVALID = frozenset(
    {libvirt.VIR_ERR_XML_ERROR, libvirt.VIR_ERR_XML_DETAIL, libvirt.VIR_ERR_INVALID_ARG}
)
# The connection to the daemon is lost or was never made.
_LOST = frozenset({libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_INVALID_CONN, libvirt.VIR_ERR_RPC})
_REMOTE_DOMAINS = frozenset({libvirt.VIR_FROM_RPC, libvirt.VIR_FROM_REMOTE})


def error_code(err: libvirt.libvirtError) -> str:
    """The contract's stable code for a libvirt error."""
    code = err.get_error_code()
    if code in _NOT_FOUND:
        return "LIBVIRT-NOT-FOUND"
    if code in _INVALID:
        return "LIBVIRT-INVALID"
    if code == libvirt.VIR_ERR_OPERATION_INVALID:
        return "LIBVIRT-STATE"
    if code in _LOST or (
        code == libvirt.VIR_ERR_SYSTEM_ERROR and err.get_error_domain() in _REMOTE_DOMAINS
    ):
        # The daemon is gone or unreachable (a system error of the RPC layer: a broken
        # socket, end of file); a system error elsewhere (a QEMU's) is the host's own.
        return "LIBVIRT-UNAVAILABLE"
    return "LIBVIRT-ERROR"


def _alive(conn: libvirt.virConnect) -> bool:
    # A local check of the client's socket; no trip to the daemon.
    try:
        return bool(conn.isAlive())
    except libvirt.libvirtError:
        return False


def fail(code: str, message: str) -> NoReturn:
    """Raise the contract's LibvirtException (the contract module is loaded once, cached)."""
    raise_(contract_module.load().LibvirtException, code, message)


def parse_uuid(value: str) -> str:
    """The canonical form of a domain UUID; a malformed one is the caller's error."""
    try:
        return str(uuid.UUID(value))
    except (ValueError, TypeError, AttributeError):
        fail("LIBVIRT-INVALID", f"not a UUID: {value!r}")


def _ignore_error(_ctx: Any, _err: Any) -> None:
    pass


class _EventBridge:
    """The process's one libvirt event implementation, forwarding to libvirtaio.

    libvirt calls these functions from whichever thread made the libvirt call (our
    executor's threads, mostly); libvirtaio touches the loop and is not thread-safe. So
    each request is posted to the loop with call_soon_threadsafe, in order, and the ids
    libvirt gets back are our own, mapped to libvirtaio's once the request has run.
    """

    def __init__(self) -> None:
        self._registered = False
        self._impl: libvirtaio.virEventAsyncIOImpl | None = None
        self._ids = itertools.count(1)
        # Our id → the implementation (of the loop of its day) and libvirtaio's id.
        self._real: dict[int, tuple[libvirtaio.virEventAsyncIOImpl, int]] = {}

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Dispatch libvirt's events on `loop` from now on; registers once per process."""
        if not self._registered:
            if libvirtaio.getCurrentImpl() is not None:
                # Someone registered libvirtaio itself: libvirt refuses a second
                # implementation, and theirs is bound to one loop we cannot follow.
                raise RuntimeError("libvirtaio is registered already; use LibvirtHost only")
            libvirt.virEventRegisterImpl(
                self._add_handle,
                self._update_handle,
                self._remove_handle,
                self._add_timeout,
                self._update_timeout,
                self._remove_timeout,
            )
            # libvirt also prints every error on stderr; each one reaches its caller as a
            # LibvirtException, so the printing is only noise.
            libvirt.registerErrorHandler(_ignore_error, None)
            self._registered = True
        if self._impl is None or self._impl.loop is not loop:
            self._impl = libvirtaio.virEventAsyncIOImpl(loop=loop)

    async def settle(self) -> None:
        """Wait until every request posted so far has run, and the frees they started."""
        loop = asyncio.get_running_loop()
        marker = loop.create_future()
        # FIFO: once the marker's callback runs, the requests posted before it have too,
        # and the free callbacks a removal schedules (one-step tasks) ran before it.
        # Not libvirtaio's drain(): it waits for every handle of the process, those of
        # connections still open included, and would never return while one is.
        loop.call_soon_threadsafe(marker.set_result, None)
        await marker
        await asyncio.sleep(0)

    def _post(self, fn: Callable[..., Any], *args: Any) -> None:
        impl = self._impl
        if impl is None:
            log.warning("libvirt event request before any loop", request=fn.__name__)
            return
        try:
            impl.loop.call_soon_threadsafe(fn, impl, *args)
        except RuntimeError:
            # The loop is closed: whatever this was for cannot fire any more.
            log.warning("libvirt event request after its loop closed", request=fn.__name__)

    def _add_handle(self, fd: int, event: int, cb: Any, opaque: Any) -> int:
        ours = next(self._ids)
        self._post(self._run_add_handle, ours, fd, event, cb, opaque)
        return ours

    def _run_add_handle(
        self, impl: libvirtaio.virEventAsyncIOImpl, ours: int, fd: int, event: int, cb: Any, o: Any
    ) -> None:
        self._real[ours] = (impl, impl._add_handle(fd, event, cb, o))

    def _update_handle(self, watch: int, event: int) -> None:
        self._post(self._run_update, watch, event, "_update_handle")

    def _remove_handle(self, watch: int) -> int:
        self._post(self._run_remove, watch, "_remove_handle")
        return 0

    def _add_timeout(self, timeout: int, cb: Any, opaque: Any) -> int:
        ours = next(self._ids)
        self._post(self._run_add_timeout, ours, timeout, cb, opaque)
        return ours

    def _run_add_timeout(
        self, impl: libvirtaio.virEventAsyncIOImpl, ours: int, timeout: int, cb: Any, o: Any
    ) -> None:
        self._real[ours] = (impl, impl._add_timeout(timeout, cb, o))

    def _update_timeout(self, timer: int, timeout: int) -> None:
        self._post(self._run_update, timer, timeout, "_update_timeout")

    def _remove_timeout(self, timer: int) -> int:
        self._post(self._run_remove, timer, "_remove_timeout")
        return 0

    def _run_update(
        self, _impl: libvirtaio.virEventAsyncIOImpl, ours: int, value: int, method: str
    ) -> None:
        found = self._real.get(ours)
        if found is not None:
            owner, real = found
            getattr(owner, method)(real, value)

    def _run_remove(self, _impl: libvirtaio.virEventAsyncIOImpl, ours: int, method: str) -> None:
        found = self._real.pop(ours, None)
        if found is not None:
            owner, real = found
            getattr(owner, method)(real)


# Module level on purpose: libvirt accepts one event implementation per process.
_bridge = _EventBridge()


class LibvirtHost:
    """One connection to `uri`, its blocking calls run in a pool of `threads` threads.

    It has the shape of a group with no methods, so a server lists it first among its
    groups: started before those that use it, closed after them.

    libvirtd may be away: not started yet when the AIM starts (a host booting, a package
    upgrade), or restarted later. The AIM does not wait for it, nor exit: start() tries
    once, and if that fails the connection is retried in place, in the background, after
    `retry_delay` seconds doubling up to `max_retry_delay`, each failure logged. A
    connection that closes under us (libvirt's close callback, or a call that finds it
    dead) is retried the same way. Meanwhile the AIM listens and answers: the disk, VLAN
    and iSCSI methods work, and every method that needs libvirt fails with the contract's
    LibvirtException code LIBVIRT-UNAVAILABLE, which the datacenter takes for an
    unreachable host and retries. Groups that hold something on the connection (the
    lifecycle events' callback) `subscribe` to be called on each new connection.
    """

    METHODS: tuple[str, ...] = ()

    def __init__(
        self,
        uri: str,
        *,
        threads: int,
        call_timeout: float,
        remote_uri: str = "",
        retry_delay: float = 1.0,
        max_retry_delay: float = 30.0,
    ) -> None:
        """`remote_uri`: what getNodeInfo tells the datacenter to reach libvirt at."""
        self.uri = uri
        self.remote_uri = remote_uri
        self.call_timeout = call_timeout
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix="libvirt"
        )
        self._conn: libvirt.virConnect | None = None
        self._subscribers: list[Callable[[libvirt.virConnect], Awaitable[None]]] = []
        self._tasks = Supervisor("aim.libvirt")
        self._retrying: asyncio.Task[None] | None = None
        self._closing = False
        self._log = log.bind(uri=uri)

    @property
    def conn(self) -> libvirt.virConnect:
        conn = self._conn
        if conn is None:
            fail("LIBVIRT-UNAVAILABLE", f"libvirt is not connected ({self.uri})")
        return conn

    @property
    def connected(self) -> bool:
        return self._conn is not None

    async def start(self) -> None:
        # Before the connection opens: libvirt binds a connection's events at open.
        _bridge.attach(asyncio.get_running_loop())
        if not await self._connect():
            self._retry()

    async def subscribe(self, callback: Callable[[libvirt.virConnect], Awaitable[None]]) -> None:
        """Call `callback(conn)` on every new connection, and now if there is one."""
        self._subscribers.append(callback)
        conn = self._conn
        if conn is not None:
            try:
                await callback(conn)
            except Exception as exc:
                # As for a connection half set up: a new one, with every subscriber.
                self._log.warning("libvirt connected but not set up", error=str(exc))
                self._conn = None
                self._tasks.spawn(self._close_quietly(conn), name="close-unready")
                self._retry()

    async def _connect(self) -> bool:
        """One attempt: open, then let the subscribers set up; False (logged) if it failed."""
        try:
            conn = await self.call(libvirt.open, self.uri)
        except Exception as exc:
            self._log.warning("libvirt unreachable", error=str(exc))
            return False
        try:
            await self.call(conn.registerCloseCallback, self._on_closed, None)
        except Exception as exc:  # the drivers that can't lose it (test://) may refuse
            self._log.debug("no close callback", error=str(exc))
        self._conn = conn
        try:
            for callback in self._subscribers:
                await callback(conn)
        except Exception as exc:
            # Half set up (no event callback): not a connection to serve from.
            self._log.warning("libvirt connected but not set up", error=str(exc))
            self._conn = None
            await self._close_quietly(conn)
            return False
        self._log.info("libvirt connected")
        return True

    def _retry(self) -> None:
        if self._closing or (self._retrying is not None and not self._retrying.done()):
            return
        self._retrying = self._tasks.spawn(self._keep_trying(), name="connect")

    async def _keep_trying(self) -> None:
        delay = self.retry_delay
        while True:
            self._log.info("libvirt connection retry scheduled", retry_in=delay)
            await asyncio.sleep(delay)
            if await self._connect():
                return
            delay = min(delay * 2, self.max_retry_delay)

    def _on_closed(self, conn: libvirt.virConnect, reason: int, _opaque: Any) -> None:
        # libvirt's close callback, run on the loop by the event implementation.
        self._log.warning("libvirt connection closed", reason=reason)
        self._lost(conn)

    def _lost(self, conn: libvirt.virConnect) -> None:
        """`conn` is dead: forget it and reconnect (once, however many notice)."""
        if self._closing or self._conn is not conn:
            return  # closing: close() closes it
        self._conn = None
        self._tasks.spawn(self._close_quietly(conn), name="close-lost")
        self._retry()

    async def _close_quietly(self, conn: libvirt.virConnect) -> None:
        try:
            await self.call(conn.close)
        except Exception as exc:  # closing goes on: the threads must end too
            self._log.warning("libvirt close failed", error=str(exc))

    async def close(self) -> None:
        self._closing = True
        await self._tasks.close()
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # a dead one has nothing to unregister
                await self.call(conn.unregisterCloseCallback)
            await self._close_quietly(conn)
            # The connection's timers are removed through the loop: let that finish so
            # that no libvirtaio task outlives us.
            await _bridge.settle()
        # shutdown(wait=True) blocks until the threads end: in a thread, off the loop.
        await asyncio.to_thread(self._executor.shutdown, True, cancel_futures=True)
        self._log.info("libvirt closed")

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` in the libvirt pool, within the call timeout, errors translated."""
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(
                loop.run_in_executor(self._executor, functools.partial(fn, *args)),
                self.call_timeout,
            )
        except libvirt.libvirtError as err:
            code = error_code(err)
            if code == "LIBVIRT-UNAVAILABLE":
                conn = self._conn
                if conn is not None and not _alive(conn):
                    self._lost(conn)
            fail(code, str(err.get_error_message() or err))
        except TimeoutError:
            name = getattr(fn, "__name__", repr(fn))
            fail("LIBVIRT-TIMEOUT", f"{name} took longer than {self.call_timeout} s")

    async def domain(self, uuid_: str) -> libvirt.virDomain:
        """The domain with this UUID; LIBVIRT-NOT-FOUND when there is none."""
        return await self.call(self.conn.lookupByUUIDString, parse_uuid(uuid_))
