"""The VSM's store in Redis (redis-py's asyncio client).

Keys, under `<prefix>vsm:<dc uuid>:`:

    epoch     a string written at start: gone means Redis was emptied
    hosts     hash: address → the caller's blob (encrypted credentials included)
    subs      hash: VM uuid → the subscription (JSON)
    known     hash: VM uuid → "<state> <host>", its last known state and host
    raw       the pub/sub channel from the monitors to the notifier

Every call is one round trip (a pipeline where it reads two keys). A lost connection is
a TemporaryError; redis-py reconnects on the next call.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import redis.asyncio as redis
from redis.exceptions import RedisError

from abiquo_dc.protocol.jobs import ObservedState
from abiquo_dc.protocol.monitoring import Subscription
from abiquo_dc.vsm.store import Known
from abiquo_runtime.errors import TemporaryError

_sub_encoder = msgspec.json.Encoder()
_sub_decoder = msgspec.json.Decoder(Subscription)


class StoreUnavailable(TemporaryError):
    code = "VSM-REDIS"


# KEYS: the known hash, the per-host index prefix; ARGV: uuid, "<state> <host>", host.
_SET_KNOWN = """
local before = redis.call('HGET', KEYS[1], ARGV[1])
if before then
  local old_host = string.match(before, '^%S+ (.*)$')
  if old_host and old_host ~= ARGV[3] then redis.call('SREM', KEYS[2] .. old_host, ARGV[1]) end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[2] .. ARGV[3], ARGV[1])
"""
# KEYS: subs, known, the per-host index prefix; ARGV: uuid, "<state> <host>", host.
# Returns the subscription and what was known before; records the new state only for a
# subscribed VM.
_OBSERVE = """
local sub = redis.call('HGET', KEYS[1], ARGV[1])
local before = redis.call('HGET', KEYS[2], ARGV[1])
if sub and before ~= ARGV[2] then
  if before then
    local old_host = string.match(before, '^%S+ (.*)$')
    if old_host and old_host ~= ARGV[3] then redis.call('SREM', KEYS[3] .. old_host, ARGV[1]) end
  end
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
  redis.call('SADD', KEYS[3] .. ARGV[3], ARGV[1])
end
return {sub, before}
"""
_FORGET = """
local before = redis.call('HGET', KEYS[1], ARGV[1])
if before then
  local old_host = string.match(before, '^%S+ (.*)$')
  if old_host then redis.call('SREM', KEYS[2] .. old_host, ARGV[1]) end
  redis.call('HDEL', KEYS[1], ARGV[1])
end
"""


def _raise_if_cancelled() -> None:
    """redis-py may swallow a cancel that lands while it connects; the task still says
    it is being cancelled, and this makes the cancel take effect."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _known(raw: bytes | None) -> Known | None:
    if raw is None:
        return None
    state, _, host = raw.decode().partition(" ")
    return Known(ObservedState(state), host)


class RedisStore:
    def __init__(self, url: str, *, prefix: str, dc_uuid: str, max_connections: int = 16) -> None:
        """`max_connections`: callers beyond it wait for a connection (never fail)."""
        self.url = url
        self.ns = f"{prefix}vsm:{dc_uuid}:"
        self.max_connections = max_connections
        self._redis: redis.Redis | None = None
        self._set_known: Any = None
        self._forget: Any = None
        self._observe: Any = None

    @property
    def _r(self) -> redis.Redis:
        if self._redis is None:
            raise StoreUnavailable("the VSM's Redis is not open")
        return self._redis

    async def open(self) -> None:
        # A blocking pool: a burst of callers waits for a connection instead of failing
        # with "too many connections", and the DC holds a few, not one per host.
        pool = redis.BlockingConnectionPool.from_url(
            self.url,
            max_connections=self.max_connections,
            timeout=10,
            socket_timeout=10,
            socket_connect_timeout=5,
            health_check_interval=15,
        )
        self._redis = redis.Redis(connection_pool=pool)
        # Sent once, then called by their digest (EVALSHA).
        self._set_known = self._redis.register_script(_SET_KNOWN)
        self._forget = self._redis.register_script(_FORGET)
        self._observe = self._redis.register_script(_OBSERVE)
        try:
            await self._redis.ping()
        except RedisError as exc:
            await self.close()
            raise StoreUnavailable(f"Redis at {self.url} does not answer: {exc}") from exc

    async def close(self) -> None:
        client, self._redis = self._redis, None
        if client is not None:
            await client.aclose(close_connection_pool=True)

    async def _do(self, coro: Any) -> Any:
        try:
            result = await coro
        except RedisError as exc:
            raise StoreUnavailable(f"Redis: {exc}") from exc
        _raise_if_cancelled()
        return result

    async def alive(self) -> bool:
        return bool(await self._do(self._r.exists(self.ns + "epoch")))

    async def mark(self) -> None:
        await self._do(self._r.set(self.ns + "epoch", "1"))

    async def put_host(self, address: str, blob: bytes) -> None:
        await self._do(self._r.hset(self.ns + "hosts", address, blob))

    async def remove_host(self, address: str) -> bool:
        return bool(await self._do(self._r.hdel(self.ns + "hosts", address)))

    async def hosts(self) -> dict[str, bytes]:
        raw = await self._do(self._r.hgetall(self.ns + "hosts"))
        return {k.decode(): v for k, v in raw.items()}

    async def subscribe(self, subscriptions: list[Subscription]) -> None:
        if subscriptions:
            mapping = {s.vm_uuid: _sub_encoder.encode(s) for s in subscriptions}
            await self._do(self._r.hset(self.ns + "subs", mapping=mapping))  # type: ignore[arg-type]

    async def unsubscribe(self, vm_uuids: list[str]) -> int:
        if not vm_uuids:
            return 0
        gone = await self._do(self._r.hdel(self.ns + "subs", *vm_uuids))
        for uuid in vm_uuids:
            await self.forget(uuid)
        return int(gone)

    async def subscriptions(self) -> list[Subscription]:
        raw = await self._do(self._r.hgetall(self.ns + "subs"))
        return [_sub_decoder.decode(v) for v in raw.values()]

    async def lookup(self, vm_uuid: str) -> tuple[Subscription | None, Known | None]:
        pipe = self._r.pipeline(transaction=False)
        pipe.hget(self.ns + "subs", vm_uuid)
        pipe.hget(self.ns + "known", vm_uuid)
        sub, known = await self._do(pipe.execute())
        return (_sub_decoder.decode(sub) if sub is not None else None), _known(known)

    async def lookup_many(
        self, vm_uuids: list[str]
    ) -> list[tuple[Subscription | None, Known | None]]:
        if not vm_uuids:
            return []
        pipe = self._r.pipeline(transaction=False)
        pipe.hmget(self.ns + "subs", vm_uuids)
        pipe.hmget(self.ns + "known", vm_uuids)
        subs, known = await self._do(pipe.execute())
        return [
            (_sub_decoder.decode(s) if s is not None else None, _known(k))
            for s, k in zip(subs, known, strict=True)
        ]

    async def observe(self, vm_uuid: str, known: Known) -> tuple[Subscription | None, Known | None]:
        sub, before = await self._do(
            self._script(self._observe)(
                keys=[self.ns + "subs", self.ns + "known", self.ns + "on:"],
                args=[vm_uuid, f"{known.state} {known.host}", known.host],
            )
        )
        return (_sub_decoder.decode(sub) if sub is not None else None), _known(before)

    async def set_known(self, vm_uuid: str, known: Known) -> None:
        # One script: the hash and the per-host index change together (a VM that moved
        # leaves its old host's set).
        await self._do(
            self._script(self._set_known)(
                keys=[self.ns + "known", self.ns + "on:"],
                args=[vm_uuid, f"{known.state} {known.host}", known.host],
            )
        )

    async def forget(self, vm_uuid: str) -> None:
        await self._do(
            self._script(self._forget)(keys=[self.ns + "known", self.ns + "on:"], args=[vm_uuid])
        )

    def _script(self, script: Any) -> Any:
        if self._redis is None or script is None:
            raise StoreUnavailable("the VSM's Redis is not open")
        return script

    async def known_on(self, host: str) -> dict[str, Known]:
        uuids = sorted(u.decode() for u in await self._do(self._r.smembers(self.ns + "on:" + host)))
        if not uuids:
            return {}
        raw = await self._do(self._r.hmget(self.ns + "known", uuids))
        found = {u: _known(v) for u, v in zip(uuids, raw, strict=True)}
        return {u: k for u, k in found.items() if k is not None and k.host == host}

    async def publish(self, payload: bytes) -> None:
        await self._do(self._r.publish(self.ns + "raw", payload))

    async def publish_many(self, payloads: list[bytes]) -> None:
        pipe = self._r.pipeline(transaction=False)
        for payload in payloads:
            pipe.publish(self.ns + "raw", payload)
        await self._do(pipe.execute())

    async def listen(self) -> AsyncIterator[bytes]:
        pubsub = self._r.pubsub(ignore_subscribe_messages=True)
        try:
            await self._do(pubsub.subscribe(self.ns + "raw"))
            while True:
                # The wait below is bounded so that a swallowed cancel is seen.
                _raise_if_cancelled()
                try:
                    message = await pubsub.get_message(timeout=1.0)
                except RedisError as exc:
                    raise StoreUnavailable(f"the VSM's Redis channel broke: {exc}") from exc
                if message is not None and message["type"] == "message":
                    yield message["data"]
        finally:
            # Bounded: a subscription cut short by a cancel can leave aclose() waiting on
            # a connection that never finished opening.
            with contextlib.suppress(TimeoutError, RedisError):
                async with asyncio.timeout(2.0):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
