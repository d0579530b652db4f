"""``FlowWorkerMiddleware``: the worker side of operator-driven runs.

For every message the operator kicked (it carries the ``tfo_run`` label) it

- skips the message when the run was cancelled (unless it is a ``finally`` step), or
  when this task id already finished (a redelivery after the worker died between saving
  and acknowledging);
- resolves input references from Redis before the task runs;
- stores the output as JSON with a TTL, then appends a step event to the events stream
  (for an item of a filter step: the item itself, when the task returned a truthy value);
- reports an unknown task name as a failed step (taskiq alone would drop the message and
  the run would wait for ever);
- keeps the names of the tasks it serves in Redis while it runs, when the operator's
  Deployment names the key (``protocol.CATALOG_ENV``).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from redis.asyncio import ConnectionPool, Redis
from taskiq import AsyncBroker, TaskiqMessage, TaskiqMiddleware, TaskiqResult
from taskiq.decor import AsyncTaskiqDecoratedTask
from taskiq.exceptions import NoResultError

from taskiq_flow.core import keeps
from taskiq_flow.errors import UnknownTaskError
from taskiq_flow_worker import protocol as p
from taskiq_flow_worker.references import References

__all__ = ["FlowWorkerMiddleware", "StepSkipped"]

logger = logging.getLogger("taskiq_flow_worker")

_skip: contextvars.ContextVar[str | None] = contextvars.ContextVar("tfo_skip", default=None)
# The JSON of a filter step's item, as resolved (before taskiq parses it into the
# parameter's type): what the step outputs for this item if the task keeps it.
_item: contextvars.ContextVar[str | None] = contextvars.ContextVar("tfo_item", default=None)


class StepSkipped(NoResultError):
    """The message is not run: its run was cancelled or the task already finished."""

    __template__ = "{reason}"
    reason: str


class FlowWorkerMiddleware(TaskiqMiddleware):
    """The worker middleware of operator-driven runs; see the module docstring.

    ``redis_url`` defaults to the broker's own connection pool (a Redis broker).
    """

    def __init__(self, redis_url: str | None = None, cache_size: int = 64) -> None:
        super().__init__()
        self.redis_url = redis_url
        self._redis: Redis | None = None
        self._references: References | None = None
        self._cache_size = cache_size
        self._wrapped: dict[str, AsyncTaskiqDecoratedTask[Any, Any]] = {}
        self._catalog: asyncio.Task[None] | None = None

    # -- wiring --------------------------------------------------------------------------

    def set_broker(self, broker: AsyncBroker) -> None:
        """Attach to ``broker``; wrap its tasks so a skipped message runs no user code."""
        super().set_broker(broker)
        original = broker.find_task

        def find_task(task_name: str) -> AsyncTaskiqDecoratedTask[Any, Any] | None:
            cached = self._wrapped.get(task_name)
            if cached is not None:
                return cached
            found = original(task_name)
            func: Callable[..., Any] = (
                found.original_func if found is not None else _unknown(task_name)
            )
            task = AsyncTaskiqDecoratedTask(
                broker=broker,
                task_name=task_name,
                original_func=_guarded(func),
                labels=dict(found.labels) if found is not None else {},
            )
            self._wrapped[task_name] = task
            return task

        broker.find_task = find_task  # type: ignore[method-assign]

    @property
    def redis(self) -> Redis:
        """The Redis client outputs and events go through."""
        if self._redis is None:
            if self.redis_url is not None:
                self._redis = Redis.from_url(self.redis_url)
            else:
                pool = getattr(self.broker, "connection_pool", None)
                if not isinstance(pool, ConnectionPool):
                    raise RuntimeError("FlowWorkerMiddleware needs redis_url or a Redis broker")
                self._redis = Redis(connection_pool=pool)
        return self._redis

    async def startup(self) -> None:
        """In a worker process whose Deployment names a catalogue key, keep it filled."""
        key = os.environ.get(p.CATALOG_ENV)
        if key and self.broker.is_worker_process:
            self._catalog = asyncio.create_task(self._keep_catalog(key))

    async def shutdown(self) -> None:
        """Stop refreshing the catalogue; close the Redis client."""
        if self._catalog is not None:
            self._catalog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._catalog
            self._catalog = None
        if self._redis is not None:
            await self._redis.aclose(close_connection_pool=self.redis_url is not None)
            self._redis = None
            self._references = None

    # -- hooks ---------------------------------------------------------------------------

    async def pre_execute(self, message: TaskiqMessage) -> TaskiqMessage:
        """Skip cancelled or finished work; resolve input references."""
        labels = message.labels
        run = labels.get(p.LABEL_RUN)
        if run is None:
            _skip.set(None)
            return message
        run = str(run)
        cancelled, done = await self.redis.mget(
            p.cancelled_key(run), p.done_key(run, message.task_id)
        )
        if p.LABEL_FINALLY in labels:
            cancelled = None  # a finally step runs after a cancel too
        if cancelled is not None or done is not None:
            why = "its run was cancelled" if cancelled is not None else "it already finished"
            _skip.set(f"task {message.task_id} skipped: {why}")
            if done is not None and cancelled is None:
                # The event may be what was lost: send it again (the operator ignores
                # duplicates of an attempt it already settled).
                await self._append_event(message, json.loads(done))
            return message
        _skip.set(None)
        if self._references is None:
            self._references = References(self.redis, self._cache_size)
        resolve = self._references.resolve
        message.args = [await resolve(v) for v in message.args]
        message.kwargs = {k: await resolve(v) for k, v in message.kwargs.items()}
        param = labels.get(p.LABEL_FILTER)
        if param is None:
            _item.set(None)
        elif param == p.POSITIONAL:
            _item.set(p.dumps(message.args[0]) if message.args else None)
        else:
            _item.set(p.dumps(message.kwargs.get(str(param))))
        message.labels[_STARTED] = str(time.time())
        return message

    async def post_save(self, message: TaskiqMessage, result: TaskiqResult[Any]) -> None:
        """Store the output, mark the task done, append the step event."""
        labels = message.labels
        run = labels.get(p.LABEL_RUN)
        if run is None or isinstance(result.error, NoResultError):
            return
        run = str(run)
        step = str(labels[p.LABEL_STEP])
        item = labels.get(p.LABEL_ITEM)
        index = None if item is None else int(item)
        ttl = int(labels.get(p.LABEL_TTL, p.DEFAULT_OUTPUT_TTL_SECONDS))
        finished = time.time()
        started = float(labels.get(_STARTED, finished - result.execution_time))
        info: dict[str, Any] = {
            "ok": not result.is_err,
            "started": round(started, 6),
            "finished": round(finished, 6),
        }
        pipe = self.redis.pipeline(transaction=True)
        if result.is_err:
            error = result.error
            info["error"] = f"{type(error).__name__}: {error}" if error else "unknown error"
        elif p.LABEL_FILTER in labels:
            # An item of a filter step: its output is the item itself, if the task kept it.
            text = _item.get()
            info["keep"] = keeps(result.return_value) and text is not None
            if info["keep"] and text is not None:
                info["size"] = len(text.encode())
                pipe.set(p.output_key(run, step, index), text, ex=ttl)
        else:
            text = p.dumps(result.return_value)
            info["size"] = len(text.encode())
            if isinstance(result.return_value, list | tuple):
                info["length"] = len(result.return_value)
            pipe.set(p.output_key(run, step, index), text, ex=ttl)
        pipe.set(p.done_key(run, message.task_id), json.dumps(info), ex=ttl)
        await pipe.execute()
        await self._append_event(message, info)

    # -- internals -----------------------------------------------------------------------

    async def _keep_catalog(self, key: str) -> None:
        # The tasks' modules were imported before the broker started: the list is whole.
        names = json.dumps(sorted(self.broker.get_all_tasks()))
        while True:
            try:
                await self.redis.set(key, names, ex=p.CATALOG_TTL_SECONDS)
            except Exception as exc:  # Redis away: try again at the next refresh
                logger.warning("could not write the task catalogue %s: %r", key, exc)
            await asyncio.sleep(p.CATALOG_REFRESH_SECONDS)

    async def _append_event(self, message: TaskiqMessage, info: dict[str, Any]) -> None:
        labels = message.labels
        item = labels.get(p.LABEL_ITEM)
        event = p.StepEvent(
            run=str(labels[p.LABEL_RUN]),
            step=str(labels[p.LABEL_STEP]),
            attempt=int(labels.get(p.LABEL_ATTEMPT, 1)),
            ok=bool(info["ok"]),
            item=None if item is None else int(item),
            item_attempt=int(labels.get(p.LABEL_ITEM_ATTEMPT, 1)),
            error=info.get("error"),
            started=info.get("started"),
            finished=info.get("finished"),
            length=info.get("length"),
            size=info.get("size"),
            keep=info.get("keep"),
        )
        stream = str(labels.get(p.LABEL_EVENTS, p.DEFAULT_EVENTS_STREAM))
        await self.redis.xadd(stream, event.encode())  # type: ignore[arg-type]


_STARTED = "tfo_started"


def _unknown(task_name: str) -> Callable[..., Any]:
    def unknown(*_args: Any, **_kwargs: Any) -> None:
        raise UnknownTaskError(task_name, "this worker")

    unknown.__name__ = "unknown_task"
    return unknown


def _guarded(func: Callable[..., Any]) -> Callable[..., Any]:
    """``func``, unless ``pre_execute`` decided to skip this message."""
    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def guarded_async(*args: Any, **kwargs: Any) -> Any:
            reason = _skip.get()
            if reason is not None:
                raise StepSkipped(reason=reason)
            return await func(*args, **kwargs)

        return guarded_async

    @functools.wraps(func)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        reason = _skip.get()
        if reason is not None:
            raise StepSkipped(reason=reason)
        return func(*args, **kwargs)

    return guarded
