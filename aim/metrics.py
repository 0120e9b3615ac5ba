"""Metrics: every domain's counters sampled at an interval, the last `keep` samples kept.

One getAllDomainStats call per interval gathers every domain at once (one trip to
libvirt, not one per domain per counter). Counters are cumulative, as libvirt gives them;
the datacenter computes rates. A domain absent from a sample is forgotten.
"""

from __future__ import annotations

import asyncio
import collections
import time
import uuid as uuid_module
from types import ModuleType
from typing import Any

import libvirt
import structlog

from abiquo_runtime.tasks import Supervisor
from aim.groups import raise_
from aim.libvirt_host import LibvirtHost

log = structlog.get_logger("aim.metrics")

_STATS = (
    libvirt.VIR_DOMAIN_STATS_STATE
    | libvirt.VIR_DOMAIN_STATS_CPU_TOTAL
    | libvirt.VIR_DOMAIN_STATS_BALLOON
    | libvirt.VIR_DOMAIN_STATS_BLOCK
    | libvirt.VIR_DOMAIN_STATS_INTERFACE
)


def _summed(stats: dict[str, Any], group: str, field: str) -> int:
    return sum(
        int(stats.get(f"{group}.{i}.{field}", 0)) for i in range(stats.get(f"{group}.count", 0))
    )


def _memory_used(stats: dict[str, Any]) -> int:
    """Bytes the guest uses: what it was given less what it reports unused, else its RSS."""
    current = int(stats.get("balloon.current", 0))
    if "balloon.unused" in stats:
        return (current - int(stats["balloon.unused"])) * 1024
    return int(stats.get("balloon.rss", current)) * 1024


class MetricsGroup:
    METHODS = ("getDatapoints",)

    def __init__(
        self, *, contract: ModuleType, host: LibvirtHost, interval: float, keep: int
    ) -> None:
        self._contract = contract
        self._host = host
        self._interval = interval
        self._keep = keep
        self._series: dict[str, collections.deque[Any]] = {}
        self._tasks = Supervisor("aim.metrics")

    async def start(self) -> None:
        # Once now: a caller (a test, a DC just connected) need not wait an interval.
        await self._sample_guarded()
        self._tasks.spawn(self._run(), name="sampler", forever=True)

    async def close(self) -> None:
        await self._tasks.close()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self._sample_guarded()

    async def _sample_guarded(self) -> None:
        try:
            await self.sample()
        except Exception as exc:  # a failed sample is a gap, not the end of sampling
            log.warning("metrics sample failed", error=str(exc))

    async def sample(self) -> None:
        conn = self._host.conn

        def gather() -> list[tuple[str, dict[str, Any]]]:
            return [(d.UUIDString(), s) for d, s in conn.getAllDomainStats(_STATS, 0)]

        records = await self._host.call(gather)
        now = int(time.time() * 1000)
        seen = set()
        for uuid, stats in records:
            seen.add(uuid)
            series = self._series.get(uuid)
            if series is None:
                series = self._series[uuid] = collections.deque(maxlen=self._keep)
            series.append(
                self._contract.Datapoint(
                    timestamp=now,
                    cpuTimeNs=int(stats.get("cpu.time", 0)),
                    memoryUsedBytes=_memory_used(stats),
                    diskReadBytes=_summed(stats, "block", "rd.bytes"),
                    diskWriteBytes=_summed(stats, "block", "wr.bytes"),
                    netRxBytes=_summed(stats, "net", "rx.bytes"),
                    netTxBytes=_summed(stats, "net", "tx.bytes"),
                )
            )
        for gone in self._series.keys() - seen:
            del self._series[gone]

    async def getDatapoints(self, uuid: str, since: int) -> list[Any]:
        try:
            key = str(uuid_module.UUID(uuid))
        except ValueError:
            raise_(self._contract.MetricsException, "METRICS-INVALID", f"not a UUID: {uuid!r}")
        series = self._series.get(key)
        if series is None:
            raise_(self._contract.MetricsException, "METRICS-NOT-FOUND", f"no samples of {key}")
        return [p for p in series if p.timestamp > since]
