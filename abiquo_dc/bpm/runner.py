"""Running one conversion of the queue, and telling how it ended.

The queue's worker hands each conversion to `ConversionRunner.run`: its requests are
journaled as started (a crash from here on is an interruption), central is told START,
the disk is checked again (it may have changed since it was queued, or its conversion
been made meanwhile), converted (convert.py) under the settings' timeout with PROGRESS
at most every `progress_interval`, and the outcome journaled, told to central and
handed to whoever waits on the bus.

A stop of the BPM cancels the run: qemu-img is killed, the temporary files removed, and
the start not counted, so the requests are taken back whole at the next start.
"""

from __future__ import annotations

import asyncio

import structlog

from abiquo_dc.bpm.conversions import Asker, Conversion, Done
from abiquo_dc.bpm.convert import convert
from abiquo_dc.bpm.errors import BpmStopped, Cancelled, ConversionTimeout
from abiquo_dc.bpm.images import Blocking, Images
from abiquo_dc.bpm.journal import ConversionJournal, Outcome
from abiquo_dc.bpm.notices import Notices
from abiquo_dc.protocol.definitions import DiskFormat
from abiquo_dc.protocol.templates import ConversionState
from abiquo_runtime.errors import AbiquoError, PermanentError

_Ending = tuple[Outcome, AbiquoError | None, Done | None]


class ConversionRunner:
    def __init__(
        self,
        *,
        journal: ConversionJournal,
        images: Images,
        notices: Notices,
        blocking: Blocking,
        timeout: float,
        progress_interval: float,
    ) -> None:
        self.journal = journal
        self.images = images
        self.notices = notices
        self._blocking = blocking
        self.timeout = timeout
        self.progress_interval = progress_interval
        self.log = structlog.get_logger("abiquo.dc.bpm").bind(subsystem="bpm")

    async def run(self, conversion: Conversion) -> None:
        try:
            outcome, error, done = await self._attempt(conversion)
            self.log.info(
                "conversion ends",
                conversion=conversion.id,
                state=outcome.state.value,
                detail=outcome.detail,
            )
            await self.end(list(conversion.askers.values()), outcome, error=error, done=done)
        finally:
            conversion.ended.set()

    async def end(
        self,
        askers: list[Asker],
        outcome: Outcome,
        *,
        error: AbiquoError | None = None,
        done: Done | None = None,
    ) -> None:
        """Journal the outcome of these requests, tell central, answer vfactory."""
        if not askers:
            return
        try:
            await self.journal.finished([a.request.id for a in askers], outcome)
        except AbiquoError as exc:
            # Told anyway: at worst the request is run again after a restart, and ends
            # the same way (its converted disk found made).
            self.log.warning("could not journal a conversion's outcome", error=exc.message)
        for asker in askers:
            if asker.request.notify:
                await self.notices.outcome(asker.request.id, outcome)
            if asker.answer is not None and not asker.answer.done():
                if done is not None:
                    asker.answer.set_result(done)
                else:
                    asker.answer.set_exception(
                        error or PermanentError(outcome.detail, code="BPM-FAILED")
                    )

    async def _attempt(self, conversion: Conversion) -> _Ending:
        target_format = conversion.target_format
        try:
            await self.journal.started(list(conversion.askers))
            conversion.state = ConversionState.START
            self.log.info(
                "conversion starts",
                conversion=conversion.id,
                source=conversion.source_path,
                target=target_format.value,
                retried=conversion.retried,
            )
            await self.notices.tell(conversion, ConversionState.START)
            async with asyncio.timeout(self.timeout):
                done = await self._produce(conversion)
        except TimeoutError:
            error: AbiquoError = ConversionTimeout(
                f"the conversion took longer than {self.timeout:.0f}s"
            )
            return failed(error, target_format), error, None
        except Cancelled as exc:
            return Outcome(ConversionState.CANCELLED, "", target_format), exc, None
        except AbiquoError as exc:
            return failed(exc, target_format), exc, None
        except asyncio.CancelledError:
            # The BPM stops: the journal keeps the requests for the next start, and this
            # start does not count as an interruption.
            abandon(conversion)
            try:
                await asyncio.shield(self.journal.stopped(list(conversion.askers)))
            except AbiquoError:
                self.log.warning("could not journal the stop of a conversion")
            raise
        except Exception as exc:
            self.log.exception("conversion failed unexpectedly", conversion=conversion.id)
            error = PermanentError(f"{type(exc).__name__}: {exc}", code="BPM-INTERNAL")
            return failed(error, target_format), error, None
        return Outcome(ConversionState.DONE, done.path, done.format), None, done

    async def _produce(self, conversion: Conversion) -> Done:
        plan = await self.images.plan(
            conversion.source_path, conversion.source_format, conversion.target_format
        )
        if plan.done is not None:
            return plan.done
        assert plan.placement is not None
        loop = asyncio.get_running_loop()
        told_at, told = loop.time(), 0.0

        async def progress(percent: float) -> None:
            nonlocal told_at, told
            conversion.progress = percent
            conversion.state = ConversionState.PROGRESS
            now = loop.time()
            if now - told_at >= self.progress_interval and percent > told:
                told_at, told = now, percent
                await self.notices.tell(conversion, ConversionState.PROGRESS)

        await convert(
            self.images,
            self._blocking,
            plan.source,
            plan.target,
            plan.placement,
            progress=progress,
            cancellation=conversion.cancellation,
        )
        return Done(plan.placement.rel, conversion.target_format)


def failed(exc: AbiquoError, target_format: DiskFormat) -> Outcome:
    return Outcome(ConversionState.FAILED, f"{exc.code}: {exc.message}", target_format)


def abandon(conversion: Conversion) -> None:
    """The BPM stops: whoever waits on the bus for this conversion is told to ask again
    (the request stays journaled and is taken back at the next start)."""
    for asker in conversion.askers.values():
        if asker.answer is not None and not asker.answer.done():
            asker.answer.set_exception(BpmStopped("the BPM stopped; ask again"))
