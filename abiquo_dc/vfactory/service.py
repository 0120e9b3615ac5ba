"""Virtualization Manager: VM jobs from central run on the hypervisors, once each.

Central sends a VirtualFactoryTask to the DC's virtualfactory queue; the link hands it
to `on_task`, which returns only when the task is finished and every notification about
it was confirmed by the broker: only then is the delivery acknowledged. So a task is
never lost (a crash before the acknowledgement brings it back) and never done twice:

- it is journaled (journal.py) before any job acts, and each job's progress after;
- a delivery of a task that is running attaches to it, of one that finished is just
  acknowledged (its notifications went out);
- at start, the notifications journaled but not confirmed are sent again, then every
  unfinished task resumes where the journal says it was (runner.py), before and while
  new tasks are taken.

Tasks on one VM run one after the other; different VMs in parallel, within the per-host
and per-datacenter bounds of the settings.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from abiquo_dc.bus import Bus, Unsubscribe
from abiquo_dc.hypervisors.pool import DriverPool, Opener
from abiquo_dc.protocol.jobs import VirtualFactoryTask
from abiquo_dc.settings import VirtualFactorySettings
from abiquo_dc.subsystem import Subsystem
from abiquo_dc.vfactory import operations
from abiquo_dc.vfactory.journal import JobJournal, TaskRecord
from abiquo_dc.vfactory.limits import HostSlots
from abiquo_dc.vfactory.retry import RetryPolicy
from abiquo_dc.vfactory.runner import Publish, TaskRunner
from abiquo_runtime.backoff import Backoff
from abiquo_runtime.errors import InvalidInput, TemporaryError

JOURNAL_FILE = "vfactory-journal.sqlite"
# How often drivers nobody used for a while are closed.
IDLE_SWEEP = 60.0


class Stopping(TemporaryError):
    code = "VF-STOPPING"


class VirtualFactory(Subsystem):
    name = "vfactory"
    path = "virtualfactory"
    check_answers_uuid = True

    def __init__(
        self,
        *,
        bus: Bus,
        dc_uuid: str,
        state_dir: Path,
        publish: Publish,
        opener: Opener,
        settings: VirtualFactorySettings | None = None,
        backoff: Callable[[], Backoff] = Backoff,
    ) -> None:
        super().__init__(bus=bus, dc_uuid=dc_uuid, backoff=backoff)
        self.settings = settings or VirtualFactorySettings()
        self.journal_path = state_dir / JOURNAL_FILE
        self._publish = publish
        self._opener = opener
        self._running: dict[str, asyncio.Future[None]] = {}
        self._recovered = asyncio.Event()
        self._unserve: list[Unsubscribe] = []
        self.journal: JobJournal | None = None
        self.pool: DriverPool | None = None
        self.runner: TaskRunner | None = None

    # -- lifecycle -----------------------------------------------------------------------

    async def setup(self) -> None:
        s = self.settings
        journal = JobJournal(self.journal_path, retention=s.retention_days * 86400.0)
        await journal.open()
        self.journal = journal
        self.pool = DriverPool(self._opener)
        self.runner = TaskRunner(
            dc_uuid=self.dc_uuid,
            journal=journal,
            pool=self.pool,
            publish=self._publish,
            bus=self.bus,
            slots=HostSlots(per_host=s.max_jobs_per_host, total=s.max_jobs),
            retry=RetryPolicy(attempts=s.attempts, initial=s.retry_initial, maximum=s.retry_max),
            conversion_timeout=s.conversion_timeout,
        )
        self._recovered.clear()
        # Registered before anything is served: a redelivery of an unfinished task
        # attaches to its resumption instead of starting it again.
        unfinished = list(journal.records.values())
        for record in unfinished:
            self._start(record)
        self.tasks.spawn(self._recover(), name="recover")
        self.tasks.spawn(self._sweep_idle(), name="idle-drivers", forever=True)
        self._unserve.append(self.bus.serve(VirtualFactoryTask, self.on_task))
        if unfinished:
            self.log.info("resuming unfinished tasks", count=len(unfinished))

    async def teardown(self) -> None:
        while self._unserve:
            self._unserve.pop()()
        self._running.clear()
        if self.pool is not None:
            await self.pool.close()
        if self.journal is not None:
            await self.journal.close()
        self.journal = self.pool = self.runner = None

    # -- the bus -------------------------------------------------------------------------

    async def on_task(self, task: VirtualFactoryTask) -> None:
        if not task.task_id or not task.jobs:
            raise InvalidInput("a task needs an id and at least one job")
        if len({job.id for job in task.jobs}) != len(task.jobs):
            raise InvalidInput(f"task {task.task_id} has two jobs with the same id")
        for job in task.jobs:
            operations.validate(job)
        journal = self.journal
        if journal is None:
            raise Stopping("the virtualization manager is not running")
        # A task that finished before a crash may still have notifications in the outbox:
        # they go out first.
        await self._recovered.wait()
        running = self._running.get(task.task_id)
        if running is not None:
            self.log.info("task delivered again while it runs", task=task.task_id)
        elif task.task_id in journal.finished:
            self.log.info("task delivered again after it finished", task=task.task_id)
            return
        else:
            # Journaled and not running: its run failed for now (the journal could not be
            # written); it goes on from where it was. Registered before any await, so a
            # delivery of the same task at the same moment attaches to this run.
            running = self._start(journal.records.get(task.task_id) or task)
        try:
            await asyncio.shield(running)
        except asyncio.CancelledError:
            if running.cancelled():
                # Stopping: the journal keeps the task, which resumes at the next start.
                raise Stopping(f"task {task.task_id} interrupted by a stop") from None
            raise

    # -- tasks ---------------------------------------------------------------------------

    def _start(self, what: TaskRecord | VirtualFactoryTask) -> asyncio.Future[None]:
        """Run a journaled task, or journal a new one and run it."""
        task_id = what.task.task_id if isinstance(what, TaskRecord) else what.task_id
        future = self.tasks.spawn(self._run(what), name=f"task:{task_id}")
        self._running[task_id] = future
        return future

    async def _run(self, what: TaskRecord | VirtualFactoryTask) -> None:
        try:
            if isinstance(what, TaskRecord):
                record = what
            else:
                assert self.journal is not None
                # Durable before any job acts.
                record = await self.journal.begin(what)
            await self._recovered.wait()
            assert self.runner is not None
            await self.runner.run(record)
        finally:
            task_id = what.task.task_id if isinstance(what, TaskRecord) else what.task_id
            self._running.pop(task_id, None)

    async def _recover(self) -> None:
        """Send again what the journal holds unconfirmed, then let the tasks run."""
        assert self.journal is not None and self.runner is not None
        pending, self.journal.outbox = self.journal.outbox, []
        if pending:
            self.log.info("sending notifications not confirmed before the stop", count=len(pending))
        for item in pending:
            await self.runner.send(item)
        self._recovered.set()

    async def _sweep_idle(self) -> None:
        while True:
            await asyncio.sleep(IDLE_SWEEP)
            if self.pool is not None:
                await self.pool.close_idle()
            if self.journal is not None:
                await self.journal.prune()

    def running(self) -> int:
        """Tasks running or waiting for their VM's turn."""
        return len(self._running)
