"""``PipelineScheduler``: run pipelines and functions on a cron schedule or an interval.

Built on taskiq's scheduler: each schedule is a taskiq ``ScheduledTask`` in a schedule
source — this process's memory by default, a taskiq-redis ``ListRedisScheduleSource``
(``redis_url=...``) when several processes share schedules — and a schedule fires by
sending a task. For a pipeline that task is ``taskiq_flow.scheduling:run_pipeline``,
which starts the pipeline registered under the schedule's key in the process that runs
it: so the module that builds and schedules the pipeline must be imported by the
workers too. Run the schedules with ``await scheduler.start()`` in a process of yours,
or with ``taskiq scheduler your.module:scheduler.taskiq_scheduler``.

Cron expressions are parsed with ``croniter`` and rejected when scheduled if invalid.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from taskiq import AsyncBroker, ScheduledTask, ScheduleSource, TaskiqScheduler
from taskiq.schedule_sources import LabelScheduleSource

__all__ = [
    "RUN_PIPELINE_TASK",
    "MemoryScheduleSource",
    "OwnLabelScheduleSource",
    "PipelineScheduler",
    "next_fire_times",
    "validate_cron",
]

RUN_PIPELINE_TASK = "taskiq_flow.scheduling:run_pipeline"

# key -> pipeline: what a firing schedule starts, in the process that runs it
_pipelines: dict[str, Any] = {}


def validate_cron(cron: str) -> str:
    """``cron`` itself when valid (five fields, or six with seconds); ``ValueError`` if not."""
    from croniter import croniter  # the tracking extra: imported when first needed

    if not isinstance(cron, str) or not croniter.is_valid(cron):
        raise ValueError(f"invalid cron expression: {cron!r}")
    return cron


def next_fire_times(cron: str, count: int = 1, start: datetime | None = None) -> list[datetime]:
    """The next ``count`` times ``cron`` fires after ``start`` (default now, UTC)."""
    from croniter import croniter

    iterator = croniter(validate_cron(cron), start or datetime.now(UTC))
    return [iterator.get_next(datetime) for _ in range(count)]


async def run_pipeline(pipeline_key: str, kwargs: dict[str, Any] | None = None) -> str:
    """The task a pipeline schedule sends: start the pipeline, return the run's id."""
    pipeline = _pipelines.get(pipeline_key)
    if pipeline is None:
        raise LookupError(
            f"no pipeline is scheduled as {pipeline_key!r} in this process: import the "
            "module that schedules it in the worker"
        )
    given = dict(kwargs or {})
    if hasattr(pipeline, "kiq_dataflow"):
        await pipeline.kiq_dataflow(**given)
    else:
        await pipeline.kiq(given.get("data", given or None))
    return str(pipeline.pipeline_id)


class MemoryScheduleSource(ScheduleSource):
    """Schedules in this process's memory (lost on exit)."""

    def __init__(self) -> None:
        self.schedules: dict[str, ScheduledTask] = {}

    async def get_schedules(self) -> list[ScheduledTask]:
        return list(self.schedules.values())

    async def add_schedule(self, schedule: ScheduledTask) -> None:
        self.schedules[schedule.schedule_id] = schedule

    async def delete_schedule(self, schedule_id: str) -> None:
        self.schedules.pop(schedule_id, None)

    def post_send(self, task: ScheduledTask) -> None:
        if task.time is not None:  # a one-off: done once sent
            self.schedules.pop(task.schedule_id, None)


class OwnLabelScheduleSource(LabelScheduleSource):
    """taskiq's ``LabelScheduleSource``, reading only the broker's own tasks that carry a
    ``schedule`` label: shared tasks (``taskiq_flow.task``) belong to taskiq's shared
    broker, and taskiq's source would warn about every one of them on each read."""

    async def startup(self) -> None:
        self.schedules.clear()
        for task_name, task in self.broker.get_all_tasks().items():
            if task.broker is not self.broker:
                continue
            for schedule in task.labels.get("schedule", []):
                if not {"cron", "interval", "time"} & schedule.keys():
                    continue
                labels = dict(schedule.get("labels", {}))
                labels.update({k: v for k, v in task.labels.items() if k != "schedule"})
                schedule_id = schedule.get("schedule_id", uuid.uuid4().hex)
                self.schedules[schedule_id] = ScheduledTask(
                    task_name=task_name,
                    labels=labels,
                    schedule_id=schedule_id,
                    args=schedule.get("args", []),
                    kwargs=schedule.get("kwargs", {}),
                    cron=schedule.get("cron"),
                    time=schedule.get("time"),
                    cron_offset=schedule.get("cron_offset"),
                    interval=schedule.get("interval"),
                )


class PipelineScheduler:
    """Schedules for pipelines and plain functions on ``broker``.

    ``redis_url`` keeps the schedules in Redis (shared by every process using the same
    URL and ``prefix``); ``source`` takes any taskiq ``ScheduleSource``. Schedules
    declared with ``DataflowPipeline.schedule_with_labels`` are read from task labels.
    """

    def __init__(
        self,
        broker: AsyncBroker,
        *,
        source: ScheduleSource | None = None,
        redis_url: str | None = None,
        prefix: str = "taskiq_flow:schedule",
    ) -> None:
        self.broker = broker
        if source is None and redis_url is not None:
            from taskiq_redis import ListRedisScheduleSource

            source = ListRedisScheduleSource(redis_url, prefix=prefix)
        self.source: ScheduleSource = source or MemoryScheduleSource()
        self.label_source = OwnLabelScheduleSource(broker)
        self.taskiq_scheduler = TaskiqScheduler(broker, [self.source, self.label_source])
        self._pending: list[ScheduledTask] = []
        self._loop_task: asyncio.Task[None] | None = None
        if broker.find_task(RUN_PIPELINE_TASK) is None:
            broker.register_task(run_pipeline, task_name=RUN_PIPELINE_TASK)

    # -- adding ------------------------------------------------------------------------

    def _add(self, schedule: ScheduledTask) -> str:
        if isinstance(self.source, MemoryScheduleSource):
            self.source.schedules[schedule.schedule_id] = schedule
        else:  # an async source: written by start() or flush()
            self._pending.append(schedule)
        return schedule.schedule_id

    def schedule(
        self,
        pipeline: Any,
        *,
        cron: str | None = None,
        interval_seconds: int | None = None,
        kwargs: dict[str, Any] | None = None,
        label: str | None = None,
        schedule_id: str | None = None,
    ) -> str:
        """Start ``pipeline`` on ``cron`` or every ``interval_seconds``; returns the
        schedule's id. ``kwargs`` are a dataflow pipeline's inputs (a sequential
        pipeline receives ``kwargs["data"]``, or the dict); ``label`` names the
        pipeline in the registry (default: its ``name`` or ``pipeline_id``)."""
        if (cron is None) == (interval_seconds is None):
            raise ValueError("give exactly one of cron= and interval_seconds=")
        if cron is not None:
            validate_cron(cron)
        if interval_seconds is not None and (
            int(interval_seconds) != interval_seconds or interval_seconds < 1
        ):
            raise ValueError("interval_seconds must be a whole number of seconds, at least 1")
        key = label or getattr(pipeline, "name", None) or str(pipeline.pipeline_id)
        _pipelines[key] = pipeline
        return self._add(
            ScheduledTask(
                task_name=RUN_PIPELINE_TASK,
                labels={"pipeline": key},
                args=[],
                kwargs={"pipeline_key": key, "kwargs": dict(kwargs or {})},
                cron=cron,
                interval=None if interval_seconds is None else int(interval_seconds),
                schedule_id=schedule_id or uuid.uuid4().hex,
            )
        )

    def schedule_at(
        self,
        fn: Callable[..., Any],
        run_at: str | datetime,
        *,
        args: list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        schedule_id: str | None = None,
    ) -> str:
        """Call ``fn`` (a function or a taskiq task) on the cron expression ``run_at``,
        or once at the datetime ``run_at``; returns the schedule's id."""
        if isinstance(run_at, str):
            validate_cron(run_at)
        name = getattr(fn, "task_name", None)
        if name is None:
            name = f"taskiq_flow.scheduled:{fn.__module__}.{fn.__qualname__}"
            if self.broker.find_task(name) is None:
                self.broker.register_task(fn, task_name=name)
        return self._add(
            ScheduledTask(
                task_name=name,
                labels={},
                args=list(args or []),
                kwargs=dict(kwargs or {}),
                cron=run_at if isinstance(run_at, str) else None,
                time=run_at if isinstance(run_at, datetime) else None,
                schedule_id=schedule_id or uuid.uuid4().hex,
            )
        )

    async def flush(self) -> None:
        """Write schedules added since the last flush to an async (Redis) source."""
        pending, self._pending = self._pending, []
        for schedule in pending:
            await self.source.add_schedule(schedule)

    # -- listing and cancelling --------------------------------------------------------

    async def list_schedules(self) -> list[ScheduledTask]:
        """Every schedule of the source (and the label-declared ones)."""
        await self.flush()
        await self.label_source.startup()
        return [*await self.source.get_schedules(), *await self.label_source.get_schedules()]

    async def cancel(self, schedule_id: str) -> bool:
        """Remove a schedule; whether it existed."""
        await self.flush()
        known = {s.schedule_id for s in await self.source.get_schedules()}
        if schedule_id not in known:
            return False
        await self.source.delete_schedule(schedule_id)
        return True

    # -- running -----------------------------------------------------------------------

    async def start(self, update_interval: float = 1.0) -> None:
        """Run the schedules from this process, in the background, until ``stop()``."""
        from taskiq.cli.scheduler.run import SchedulerLoop

        if self._loop_task is not None and not self._loop_task.done():
            return
        await self.flush()
        for source in self.taskiq_scheduler.sources:
            await source.startup()
        loop = SchedulerLoop(self.taskiq_scheduler)
        self._loop_task = asyncio.create_task(
            loop.run(update_interval=timedelta(seconds=update_interval))
        )

    async def stop(self) -> None:
        """Stop running the schedules."""
        task, self._loop_task = self._loop_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for source in self.taskiq_scheduler.sources:
            await source.shutdown()


def label_schedule(
    *, cron: str | None = None, interval_seconds: int | None = None, kwargs: dict[str, Any]
) -> dict[str, Any]:
    """One entry of a task's ``schedule`` label (what ``LabelScheduleSource`` reads)."""
    if (cron is None) == (interval_seconds is None):
        raise ValueError("give exactly one of cron= and interval_seconds=")
    entry: dict[str, Any] = {"kwargs": kwargs}
    if cron is not None:
        entry["cron"] = validate_cron(cron)
    else:
        entry["interval"] = interval_seconds
    return entry


def register_label_schedule(
    broker: AsyncBroker, pipeline: Any, key: str, schedules: list[dict[str, Any]]
) -> str:
    """Register a task that starts ``pipeline`` with ``schedule`` labels; its name."""
    _pipelines[key] = pipeline
    name = f"taskiq_flow.scheduled_pipeline:{key}"

    async def start_pipeline(**inputs: Any) -> str:
        return await run_pipeline(key, inputs)

    broker.register_task(start_pipeline, task_name=name, schedule=schedules)
    return name
