"""The templates' statuses in Redis (redis-py's asyncio client).

Keys, under `<prefix>am:<dc uuid>:`:

    enterprises       set: the enterprises with at least one template recorded
    templates:<ent>   hash: ovf_id → the TemplateState (JSON)

A put and a remove change both keys in one script. A lost connection is a
TemporaryError; redis-py reconnects on the next call.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import redis.asyncio as redis
from redis.exceptions import RedisError

from abiquo_dc.am.status import TemplateState
from abiquo_runtime.errors import TemporaryError

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(TemplateState)

# KEYS: the enterprise's hash, the enterprises set; ARGV: ovf_id, state, enterprise.
_PUT = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
"""
_REMOVE = """
local gone = redis.call('HDEL', KEYS[1], ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('SREM', KEYS[2], ARGV[3]) end
return gone
"""


class StatusUnavailable(TemporaryError):
    code = "AM-REDIS"


class RedisStatusStore:
    def __init__(self, url: str, *, prefix: str, dc_uuid: str) -> None:
        self.url = url
        self.ns = f"{prefix}am:{dc_uuid}:"
        self._redis: redis.Redis | None = None

    @property
    def _r(self) -> redis.Redis:
        if self._redis is None:
            raise StatusUnavailable("the AM's Redis is not open")
        return self._redis

    async def open(self) -> None:
        self._redis = redis.Redis.from_url(
            self.url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=15
        )
        try:
            await self._redis.ping()
        except RedisError as exc:
            await self.close()
            raise StatusUnavailable(f"Redis at {self.url} does not answer: {exc}") from exc

    async def close(self) -> None:
        client, self._redis = self._redis, None
        if client is not None:
            await client.aclose()

    async def _do(self, coro: Any) -> Any:
        try:
            result = await coro
        except RedisError as exc:
            raise StatusUnavailable(f"Redis: {exc}") from exc
        # redis-py may swallow a cancel that lands while it connects: make it count.
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise asyncio.CancelledError
        return result

    def _key(self, enterprise_id: str) -> str:
        return f"{self.ns}templates:{enterprise_id}"

    async def put(self, enterprise_id: str, state: TemplateState) -> None:
        await self._do(
            self._r.eval(
                _PUT,
                2,
                self._key(enterprise_id),
                self.ns + "enterprises",
                state.ovf_id,
                _encoder.encode(state),
                enterprise_id,
            )
        )

    async def get(self, enterprise_id: str, ovf_id: str) -> TemplateState | None:
        raw = await self._do(self._r.hget(self._key(enterprise_id), ovf_id))
        return None if raw is None else _decoder.decode(raw)

    async def all(self, enterprise_id: str) -> list[TemplateState]:
        raw = await self._do(self._r.hgetall(self._key(enterprise_id)))
        states = [_decoder.decode(v) for v in raw.values()]
        return sorted(states, key=lambda s: s.ovf_id)

    async def remove(self, enterprise_id: str, ovf_id: str) -> bool:
        gone = await self._do(
            self._r.eval(
                _REMOVE,
                2,
                self._key(enterprise_id),
                self.ns + "enterprises",
                ovf_id,
                "",
                enterprise_id,
            )
        )
        return bool(gone)

    async def enterprises(self) -> list[str]:
        raw = await self._do(self._r.smembers(self.ns + "enterprises"))
        return sorted(m.decode() for m in raw)
