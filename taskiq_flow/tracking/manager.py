"""``PipelineTrackingManager``: records runs, answers queries, calls listeners.

Pipelines report through the ``RunObserver`` calls (``run_started``, ``step_started``,
``step_finished``, ``run_finished``). The per-step calls only update the record in
memory and mark it dirty: a background task writes dirty records in one batch (one
round trip to Redis) and then calls the listeners, so neither storage nor a slow
listener sits on a task's path. ``run_finished`` flushes, so once a run's result is
back its record is complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import statistics
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Self

from taskiq_flow.tracking.models import PipelineMetrics, PipelineStatus, StepStatus
from taskiq_flow.tracking.observer import PipelineType, step_end_event, step_start_event
from taskiq_flow.tracking.storage import (
    InMemoryPipelineStorage,
    RedisPipelineStorage,
    TrackingStorage,
)

__all__ = ["LISTENER_METHODS", "PipelineTrackingManager", "TrackingEvent"]

logger = logging.getLogger("taskiq_flow.tracking")

LISTENER_METHODS = (
    "on_pipeline_start",
    "on_step_start",
    "on_step_complete",
    "on_pipeline_complete",
    "on_pipeline_error",
)

TrackingEvent = dict[str, Any]
"""A status event: ``type`` (pipeline_start, step_start, step_complete, step_error,
pipeline_complete, pipeline_error), ``pipeline_id``, ``status``, ``timestamp`` (ISO),
and ``step_name``/``index``/``duration_ms``/``error`` where they apply."""

_MAX_LIVE = 10_000  # runs held in memory while they run (runs finished elsewhere age out)
_FLUSH_DELAY = 0.02  # seconds a write waits for others to share its round trip
WRITE_TIMEOUT = 2.0  # seconds a batch may take before storage counts as unavailable


def _now() -> datetime:
    return datetime.now(UTC)


def _ms(start: datetime | None, end: datetime) -> float | None:
    return None if start is None else (end - start).total_seconds() * 1000.0


def _from_ts(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


class PipelineTrackingManager:
    """Central tracking: attach with ``Pipeline(broker).with_tracking(manager)``."""

    def __init__(
        self, storage: TrackingStorage | None = None, *, write_timeout: float = WRITE_TIMEOUT
    ) -> None:
        self._storage = storage
        self.write_timeout = write_timeout
        self._listeners: list[Any] = []
        self._live: OrderedDict[str, PipelineStatus] = OrderedDict()
        self._dirty: dict[str, PipelineStatus] = {}
        self._events: list[TrackingEvent] = []
        self._calls: deque[tuple[str, tuple[Any, ...], TrackingEvent]] = deque()
        self._task: asyncio.Task[None] | None = None
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None
        self._flushing: asyncio.Task[Any] | None = None
        self._storage_down = False
        self._remote_runs: set[str] = set()
        self._follower: asyncio.Task[None] | None = None

    # -- configuration -----------------------------------------------------------------

    def with_storage(self, storage: TrackingStorage) -> Self:
        """Use ``storage`` (memory, Redis or your own ``TrackingStorage``)."""
        self._storage = storage
        return self

    def with_auto_storage(
        self,
        broker: Any,
        *,
        key_prefix: str | None = None,
        ttl_seconds: int | None = None,
    ) -> Self:
        """Redis storage on the broker's own connection pool for a taskiq-redis broker,
        ``InMemoryPipelineStorage`` otherwise."""
        from taskiq_flow.completions import redis_pool_of

        pool = redis_pool_of(broker)
        if pool is None:
            return self.with_storage(InMemoryPipelineStorage())
        from redis.asyncio import Redis

        options: dict[str, Any] = {}
        if key_prefix is not None:
            options["key_prefix"] = key_prefix
        if ttl_seconds is not None:
            options["ttl_seconds"] = ttl_seconds
        return self.with_storage(RedisPipelineStorage(Redis(connection_pool=pool), **options))

    @property
    def storage(self) -> TrackingStorage:
        """The storage; ``RuntimeError`` when none is configured."""
        if self._storage is None:
            raise RuntimeError(
                "No tracking storage configured: call with_auto_storage(broker) or "
                "with_storage(InMemoryPipelineStorage()) first"
            )
        return self._storage

    def remote_config(self) -> dict[str, Any] | None:
        """How workers in other processes write into the same storage (Redis only)."""
        storage = self._storage
        return storage.config() if isinstance(storage, RedisPipelineStorage) else None

    def add_listener(self, listener: Any) -> None:
        """Add an object with any of ``LISTENER_METHODS`` (sync or async), or a callable
        that receives every ``TrackingEvent``. A listener that raises is logged."""
        if not callable(listener) and not any(hasattr(listener, m) for m in LISTENER_METHODS):
            raise TypeError(
                f"a listener needs one of {', '.join(LISTENER_METHODS)} or to be callable"
            )
        self._listeners.append(listener)

    def remove_listener(self, listener: Any) -> None:
        """Stop calling ``listener``."""
        self._listeners = [x for x in self._listeners if x is not listener]

    @property
    def listeners(self) -> list[Any]:
        """The listeners, in the order they are called."""
        return list(self._listeners)

    # -- RunObserver -------------------------------------------------------------------

    def _record(self, run_id: str) -> PipelineStatus:
        status = self._live.get(run_id)
        if status is None:
            status = PipelineStatus(pipeline_id=run_id, status="RUNNING", started_at=_now())
            self._keep(status)
        return status

    def _keep(self, status: PipelineStatus) -> None:
        self._live[status.pipeline_id] = status
        while len(self._live) > _MAX_LIVE:
            self._live.popitem(last=False)

    def _step(self, status: PipelineStatus, index: int, name: str) -> StepStatus:
        while len(status.steps) <= index:
            status.steps.append(StepStatus(step_name=name if len(status.steps) == index else "?"))
        return status.steps[index]

    def _changed(
        self, status: PipelineStatus, event: TrackingEvent, call: str | None, *args: Any
    ) -> None:
        self.storage  # noqa: B018 - fail at once, not in the background, without storage
        self._dirty[status.pipeline_id] = status
        event.setdefault("pipeline_id", status.pipeline_id)
        event.setdefault("timestamp", _now().isoformat())
        self._events.append(event)
        self._calls.append((call or "", args, event))
        self._schedule()

    def run_started(self, run_id: str, pipeline_type: PipelineType, step_names: list[str]) -> None:
        """Record a new run: PENDING, then RUNNING with every step PENDING."""
        status = PipelineStatus(
            pipeline_id=run_id,
            status="PENDING",
            pipeline_type=pipeline_type,
            steps=[StepStatus(step_name=n) for n in step_names],
        )
        self._keep(status)
        self._changed(status, {"type": "pipeline_pending", "status": "PENDING"}, None)
        status.status = "RUNNING"
        status.started_at = _now()
        self._changed(
            status, {"type": "pipeline_start", "status": "RUNNING"}, "on_pipeline_start", run_id
        )

    def step_started(self, run_id: str, index: int, name: str) -> None:
        """Mark step ``index`` RUNNING."""
        status = self._record(run_id)
        step = self._step(status, index, name)
        if step.status == "RUNNING":
            return
        step.status = "RUNNING"
        step.started_at = _now()
        self._changed(status, step_start_event(name, index), "on_step_start", run_id, name)

    def step_finished(
        self,
        run_id: str,
        index: int,
        name: str,
        *,
        result: Any = None,
        error: str | None = None,
        started_at: float | None = None,
    ) -> None:
        """Mark step ``index`` COMPLETED (or FAILED when ``error`` is set)."""
        status = self._record(run_id)
        step = self._step(status, index, name)
        if step.status in ("COMPLETED", "FAILED"):
            return
        now = _now()
        step.started_at = step.started_at or _from_ts(started_at) or now
        step.completed_at = now
        step.duration_ms = _ms(step.started_at, now)
        step.status = "FAILED" if error is not None else "COMPLETED"
        step.result = None if error is not None else result
        step.error = error
        event = step_end_event(name, index, step.duration_ms, error)
        if error is None:
            self._changed(status, event, "on_step_complete", run_id, name, result)
        else:
            self._changed(status, event, "on_step_error", run_id, name, error)

    async def run_finished(
        self,
        run_id: str,
        status: str,
        *,
        result: Any = None,
        error: str | None = None,
        started_at: float | None = None,
    ) -> None:
        """Record the end of a run, write it out and call the listeners."""
        record = self._record(run_id)
        if not record.is_finished:
            now = _now()
            record.started_at = record.started_at or _from_ts(started_at)
            record.status = status
            record.completed_at = now
            record.duration_ms = _ms(record.started_at, now)
            record.result = result if status == "COMPLETED" else None
            record.error = error
            if status != "COMPLETED":
                for step in record.steps:
                    if step.status == "RUNNING":  # abandoned when the run ended
                        step.status = "FAILED"
                        step.completed_at = now
                        step.duration_ms = _ms(step.started_at, now)
                        step.error = step.error or f"run ended: {status}"
            if status == "FAILED":
                self._changed(
                    record,
                    {"type": "pipeline_error", "status": status, "error": error},
                    "on_pipeline_error",
                    run_id,
                    error or "",
                )
            self._changed(
                record,
                {
                    "type": "pipeline_complete",
                    "status": status,
                    "duration_ms": record.duration_ms,
                    "error": error,
                },
                "on_pipeline_complete",
                run_id,
                record,
            )
        if self._storage_down:
            self._schedule()  # storage is failing: do not hold the run up on it
        else:
            await self.flush()
        self._live.pop(run_id, None)

    # -- the background writer ---------------------------------------------------------

    def _schedule(self) -> None:
        if self._task is not None and not self._task.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop: the next flush() writes it
            return
        self._task = loop.create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        await asyncio.sleep(_FLUSH_DELAY)
        await self.flush()

    async def flush(self) -> None:
        """Write every pending change and call the listeners for the events so far."""
        current = asyncio.current_task()
        if current is not None and current is self._flushing:
            return  # a listener queried the manager: the flush it runs in goes on after it
        lock = self._lock_for_loop()
        async with lock:
            self._flushing = current
            try:
                await self._flush_all()
            finally:
                self._flushing = None

    def _lock_for_loop(self) -> asyncio.Lock:
        # A manager may outlive an event loop (tests, scripts calling asyncio.run twice).
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock = asyncio.Lock()
            self._lock_loop = loop
        return self._lock

    async def _flush_all(self) -> None:
        while self._dirty or self._calls:
            dirty, self._dirty = list(self._dirty.values()), {}
            events, self._events = self._events, []
            await self._write(dirty, events)
            while self._calls:
                call, args, event = self._calls.popleft()
                await self._notify(call, args, event)

    async def _write(self, statuses: list[PipelineStatus], events: list[TrackingEvent]) -> None:
        if not statuses:
            return
        storage = self.storage
        try:
            async with asyncio.timeout(self.write_timeout):
                if isinstance(storage, RedisPipelineStorage):
                    await storage.save_many(statuses, events)
                elif hasattr(storage, "save_many"):
                    await storage.save_many(statuses)
                else:
                    for status in statuses:
                        await storage.save_status(status)
        except Exception as exc:  # including TimeoutError
            # Tracking never fails a pipeline: say so once, clearly, then stay quiet.
            if not self._storage_down:
                self._storage_down = True
                logger.error(
                    "tracking storage %s is unavailable (%s: %s); pipelines keep running "
                    "but their tracking records are not being saved",
                    type(storage).__name__,
                    type(exc).__name__,
                    str(exc) or f"no answer within {self.write_timeout}s",
                )
            else:
                logger.debug("tracking write failed again", exc_info=True)
        else:
            if self._storage_down:
                self._storage_down = False
                logger.warning("tracking storage %s is reachable again", type(storage).__name__)

    async def _notify(self, call: str, args: tuple[Any, ...], event: TrackingEvent) -> None:
        for listener in list(self._listeners):
            method: Callable[..., Any] | None
            if call and hasattr(listener, call):
                method, method_args = getattr(listener, call), args
            elif callable(listener) and not any(hasattr(listener, m) for m in LISTENER_METHODS):
                method, method_args = listener, (dict(event),)
            else:
                method = None
            if method is None:
                continue
            try:
                outcome = method(*method_args)
                if inspect.isawaitable(outcome):
                    await outcome
            except Exception:
                logger.exception("tracking listener %r failed on %s", listener, call or event)

    # -- runs that advance in other processes ------------------------------------------

    async def follow_remote(self, run_id: str) -> None:
        """Call this process's listeners for what workers elsewhere record of ``run_id``.

        A sequential run on Redis advances on the workers, which write its steps into
        the Redis storage and publish them on its events channel; this subscribes to that
        channel (before returning, so nothing is missed) until the run ends. Without
        listeners or without Redis storage there is nothing to do.
        """
        storage = self._storage
        if not isinstance(storage, RedisPipelineStorage) or not self._listeners:
            return
        self._remote_runs.add(run_id)
        if self._follower is None or self._follower.done():
            pubsub = storage.client.pubsub()
            await pubsub.subscribe(storage.events_channel)
            self._follower = asyncio.get_running_loop().create_task(self._follow(pubsub))

    async def _follow(self, pubsub: Any) -> None:
        try:
            while self._remote_runs:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is None:
                    continue
                data = message["data"]
                event = json.loads(data.decode() if isinstance(data, bytes) else data)
                if (
                    event.get("origin") == "worker"
                    and event.get("pipeline_id") in self._remote_runs
                ):
                    await self._deliver_remote(event)
        except Exception:
            logger.exception("lost the tracking events channel; remote runs' listeners stop")
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def _deliver_remote(self, event: TrackingEvent) -> None:
        run_id = str(event["pipeline_id"])
        kind = event.get("type")
        step = str(event.get("step_name", ""))
        if kind == "step_start":
            await self._notify("on_step_start", (run_id, step), event)
        elif kind == "step_complete":
            record = await self.storage.get_status(run_id)
            index = int(event.get("index", -1))
            steps = record.steps if record is not None else []
            result = steps[index].result if 0 <= index < len(steps) else None
            await self._notify("on_step_complete", (run_id, step, result), event)
        elif kind == "step_error":
            await self._notify("on_step_error", (run_id, step, event.get("error")), event)
        elif kind == "pipeline_error":
            await self._notify("on_pipeline_error", (run_id, event.get("error") or ""), event)
        elif kind == "pipeline_complete":
            self._remote_runs.discard(run_id)
            self._live.pop(run_id, None)
            record = await self.storage.get_status(run_id)
            await self._notify("on_pipeline_complete", (run_id, record), event)

    async def close(self) -> None:
        """Flush and stop the background writer."""
        await self.flush()
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self._follower is not None and not self._follower.done():
            self._remote_runs.clear()
            self._follower.cancel()

    # -- queries -----------------------------------------------------------------------

    async def get_status(self, pipeline_id: str) -> PipelineStatus | None:
        """The record of one run (``None`` when unknown or expired)."""
        await self.flush()
        return await self.storage.get_status(pipeline_id)

    async def list_pipelines(self, status_filter: str | None = None) -> list[PipelineStatus]:
        """Every record, newest first, or only those whose status is ``status_filter``."""
        await self.flush()
        return await self.storage.list_pipelines(status_filter=status_filter)

    async def get_history(
        self, limit: int | None = None, since: datetime | None = None
    ) -> list[PipelineStatus]:
        """Runs started at or after ``since``, newest first, at most ``limit``."""
        await self.flush()
        storage: Any = self.storage
        if hasattr(storage, "get_history"):
            history: list[PipelineStatus] = await storage.get_history(limit=limit, since=since)
            return history
        records = await self.storage.list_pipelines()
        if since is not None:
            bound = since.astimezone(UTC) if since.tzinfo is None else since
            records = [r for r in records if r.started_at and r.started_at >= bound]
        return records if limit is None else records[:limit]

    async def cleanup_older_than(self, days: float) -> int:
        """Delete records of runs started more than ``days`` ago; returns how many."""
        await self.flush()
        cutoff = _now() - timedelta(days=days)
        storage: Any = self.storage
        if hasattr(storage, "cleanup_older_than"):
            return int(await storage.cleanup_older_than(cutoff))
        old = [
            r for r in await self.storage.list_pipelines() if r.started_at and r.started_at < cutoff
        ]
        for record in old:
            await self.storage.delete_pipeline(record.pipeline_id)
        return len(old)

    async def delete_pipeline(self, pipeline_id: str) -> None:
        """Delete one record."""
        await self.flush()
        self._live.pop(pipeline_id, None)
        await self.storage.delete_pipeline(pipeline_id)

    async def get_metrics(self, days: float = 7) -> PipelineMetrics:
        """Totals, success rate, durations, failure reasons, throughput, slow steps and
        busy hours over the runs started in the last ``days`` days."""
        since = _now() - timedelta(days=days)
        runs = await self.get_history(since=since)
        metrics = PipelineMetrics(days=days, total_pipelines=len(runs))
        if not runs:
            return metrics
        by_status = Counter(r.status for r in runs)
        metrics.completed = by_status["COMPLETED"]
        metrics.failed = by_status["FAILED"]
        metrics.cancelled = by_status["CANCELLED"]
        metrics.running = by_status["RUNNING"] + by_status["PENDING"]
        finished = metrics.completed + metrics.failed + metrics.cancelled
        metrics.success_rate = metrics.completed / finished if finished else 0.0
        durations = [r.duration_ms for r in runs if r.is_finished and r.duration_ms is not None]
        metrics.avg_duration_ms = statistics.fmean(durations) if durations else 0.0
        metrics.failure_reasons = dict(
            Counter(
                (r.error or "unknown").split(":", 1)[0].strip()
                for r in runs
                if r.status == "FAILED"
            ).most_common()
        )
        starts = sorted(r.started_at for r in runs if r.started_at is not None)
        if starts:
            span = max((starts[-1] - starts[0]).total_seconds() / 60.0, 1.0)
            metrics.throughput_per_minute = len(starts) / span
        step_times: dict[str, list[float]] = {}
        executions: list[tuple[str, float]] = []
        for run in runs:
            for step in run.steps:
                if step.duration_ms is not None and step.status == "COMPLETED":
                    step_times.setdefault(step.step_name, []).append(step.duration_ms)
                    executions.append((step.step_name, step.duration_ms))
        metrics.avg_step_duration_ms = {n: statistics.fmean(v) for n, v in step_times.items()}
        metrics.longest_steps = sorted(executions, key=lambda e: e[1], reverse=True)[:10]
        metrics.busy_hours = dict(Counter(s.hour for s in starts).most_common())
        return metrics
