"""``PipelineMiddleware``: the worker side of taskiq-flow.

Add it to the broker in every process that runs pipeline tasks (the library adds it to
the broker it drives when it is missing, so one-process setups need nothing)::

    broker.add_middlewares(PipelineMiddleware())

For tasks that belong to a pipeline run it

- waits out a retry's delay before the task runs (the message stays unacknowledged, so a
  worker that dies meanwhile loses nothing);
- injects ``PipelineContext`` into a parameter annotated with it;
- as soon as the task has run, calls ``on_step_complete``, then tells the run's driver
  (dataflow runs) or advances the run itself (sequential runs);
- turns a task name this worker does not know into a failed step
  (``UnknownTaskError``), where taskiq alone would drop the message and leave the run
  waiting;
- drops, without running it, a message of a dataflow run that is over (its driver
  closed the run's event stream): a step left queued by a run that timed out or was
  cancelled, which no worker was there to take.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from taskiq import AsyncBroker, TaskiqMessage, TaskiqMiddleware, TaskiqResult
from taskiq.decor import AsyncTaskiqDecoratedTask
from taskiq.exceptions import NoResultError

from taskiq_flow.chains.driver import (
    LABEL_NO_CONTEXT,
    LABEL_NOT_BEFORE,
    LABEL_SEQ,
    on_step_finished,
)
from taskiq_flow.completions import (
    EVENTS_PREFIX,
    LABEL_ATTEMPT,
    LABEL_MODE,
    LABEL_NODE,
    LABEL_RUN,
    LABEL_STARTED,
    LABEL_STEP,
    publish_completion,
    redis_pool_of,
    shared_client,
)
from taskiq_flow.context import PipelineContext
from taskiq_flow.decorators import context_parameter
from taskiq_flow.errors import UnknownTaskError

__all__ = ["PipelineMiddleware", "context_from", "ensure_middleware"]

logger = logging.getLogger("taskiq_flow.middleware")

_NO_CONTEXT = ""
# taskiq's errors are costly to build; taskiq only checks the type of this one.
_NO_RESULT = NoResultError()
# The keyword a dropped message's task is called with instead of its arguments.
_DROPPED = "__taskiq_flow_dropped__"
# A run seen open is not looked at again for this long (one EXISTS per run and period).
RUN_OPEN_RECHECK_SECONDS = 5.0


class RunEnded(NoResultError):
    """The message belongs to a run that is over: it is acknowledged and not run."""

    __template__ = "{reason}"
    reason: str


class PipelineMiddleware(TaskiqMiddleware):
    """Runs the worker side of pipelines; see the module docstring.

    Subclass it and override ``on_step_complete`` to observe steps; call ``super()``.
    """

    def __init__(self) -> None:
        super().__init__()
        self._context_params: dict[str, str] = {}
        self._open_runs: dict[str, float] = {}  # run → when its stream was last seen

    def set_broker(self, broker: AsyncBroker) -> None:
        """Attach to ``broker``: unknown task names fail visibly, messages of runs that
        are over can be dropped."""
        super().set_broker(broker)
        _wrap_tasks(broker)

    def _context_param(self, task_name: str) -> str | None:
        cached = self._context_params.get(task_name)
        if cached is None:
            task = self.broker.find_task(task_name)
            found = context_parameter(task.original_func) if task is not None else None
            cached = self._context_params[task_name] = found or _NO_CONTEXT
        return cached or None

    async def pre_execute(self, message: TaskiqMessage) -> TaskiqMessage:
        """Wait out a retry delay; inject ``PipelineContext`` when the task asks for it."""
        labels = message.labels
        if LABEL_RUN not in labels and LABEL_SEQ not in labels:
            return message
        run = labels.get(LABEL_RUN)
        if run is not None and await self._run_is_over(str(run)):
            logger.warning("task %s dropped: its run %s is over", message.task_id, run)
            message.args = []
            message.kwargs = {_DROPPED: f"its run {run} is over"}
            return message
        not_before = labels.get(LABEL_NOT_BEFORE)
        if not_before is not None:
            delay = float(not_before) - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
        if not labels.get(LABEL_NO_CONTEXT):
            param = self._context_param(message.task_name)
            if param is not None and param not in message.kwargs:
                message.kwargs[param] = context_from(message, self.broker)
        return message

    async def _run_is_over(self, run: str) -> bool:
        """Whether the driver of dataflow run ``run`` closed its event stream (Redis
        brokers only: elsewhere the driver and the task share a process)."""
        now = time.monotonic()
        seen = self._open_runs.get(run)
        if seen is not None and now - seen < RUN_OPEN_RECHECK_SECONDS:
            return False
        pool = redis_pool_of(self.broker)
        if pool is None:
            return False
        try:
            is_open = bool(await shared_client(pool).exists(EVENTS_PREFIX + run))
        except Exception:  # Redis away: run the task; its completion finds out later
            logger.warning("could not tell whether run %s is still open", run, exc_info=True)
            return False
        if is_open:
            if len(self._open_runs) > 10_000:
                self._open_runs.clear()
            self._open_runs[run] = now
        return not is_open

    async def post_execute(self, message: TaskiqMessage, result: TaskiqResult[Any]) -> None:
        """Call ``on_step_complete``, then report the finished step to its run (dataflow)
        or advance the run (sequential).

        This happens before taskiq saves the result: nobody reads a pipeline step's result
        from the result backend (the run's record and event stream carry it), so the run
        does not wait for that write — the next step is on its way while it happens.
        """
        labels = message.labels
        if isinstance(result.error, NoResultError):
            return
        if LABEL_SEQ not in labels and LABEL_RUN not in labels:
            return
        if type(self).on_step_complete is not PipelineMiddleware.on_step_complete:
            try:
                await self.on_step_complete(context_from(message, self.broker), result)
            except Exception:
                logger.exception("on_step_complete raised for task %s", message.task_id)
        if LABEL_SEQ in labels:
            try:
                await on_step_finished(self.broker, message, result)
            except Exception:
                # Raised on: taskiq then neither saves nor acknowledges the message, so it
                # is redelivered and the run never silently stops because Redis blinked.
                logger.exception("could not advance run %s", labels[LABEL_SEQ])
                raise
            if not result.is_err:
                # The run's record holds the output; a copy in the result backend would
                # cost the worker a write per step that nobody reads. taskiq skips saving
                # a result whose error is NoResultError (and still acknowledges it).
                result.error = _NO_RESULT
            return
        try:
            heard = await publish_completion(
                self.broker, str(labels[LABEL_RUN]), message.task_id, result
            )
        except Exception:
            # The driver still sees the result through its fallbacks (step timeout, result
            # backend); a failed notification must not fail the task.
            logger.exception("could not report completion of task %s", message.task_id)
            return
        if heard and not result.is_err:
            result.error = _NO_RESULT  # the driver has it: no copy in the result backend

    async def on_step_complete(self, ctx: PipelineContext, result: TaskiqResult[Any]) -> None:
        """Called on the worker when a pipeline step (or map item) has finished, before
        its run moves on: the next step starts once this returns, so keep it short."""


def context_from(message: TaskiqMessage, broker: AsyncBroker) -> PipelineContext:
    """The ``PipelineContext`` of a pipeline task's message."""
    labels = message.labels
    started = labels.get(LABEL_STARTED)
    return PipelineContext(
        pipeline_id=str(labels.get(LABEL_RUN) or labels.get(LABEL_SEQ) or ""),
        step_index=int(labels.get(LABEL_STEP, 0)),
        task_id=message.task_id,
        execution_mode=labels.get(LABEL_MODE, "parallel"),
        started_at=(datetime.fromtimestamp(float(started), UTC) if started else datetime.now(UTC)),
        broker=broker,
        step_name=str(labels.get(LABEL_NODE, message.task_name)),
        attempt=int(labels.get(LABEL_ATTEMPT, 1)),
    )


def ensure_middleware(broker: AsyncBroker) -> None:
    """Add ``PipelineMiddleware`` to ``broker`` unless it already has one."""
    if not any(isinstance(m, PipelineMiddleware) for m in broker.middlewares):
        broker.add_middlewares(PipelineMiddleware())


def _wrap_tasks(broker: AsyncBroker) -> None:
    """Make ``broker.find_task`` answer an unknown name with a task that fails, and a
    known one with the task wrapped so that ``pre_execute`` can drop its message.

    taskiq drops a message whose task it cannot find, so the run that sent it would wait
    forever. With this, the message runs a stand-in that raises ``UnknownTaskError``; the
    failure is saved and reported like any other.
    """
    if getattr(broker, "_taskiq_flow_unknown_tasks", False):
        return
    original = broker.find_task
    wrapped: dict[str, AsyncTaskiqDecoratedTask[Any, Any]] = {}

    def find_task(task_name: str) -> AsyncTaskiqDecoratedTask[Any, Any] | None:
        cached = wrapped.get(task_name)
        if cached is not None:
            return cached
        found = original(task_name)
        if found is not None:
            # The same task, but one ``pre_execute`` can stop (a message of a run that
            # is over): taskiq has chosen the function before any middleware runs.
            task = AsyncTaskiqDecoratedTask(
                broker=broker,
                task_name=task_name,
                original_func=_droppable(found.original_func),
                labels=dict(found.labels),
            )
            wrapped[task_name] = task
            return task

        def unknown(*_args: Any, **_kwargs: Any) -> None:
            raise UnknownTaskError(task_name, "this worker")

        unknown.__name__ = "unknown_task"
        return AsyncTaskiqDecoratedTask(
            broker=broker, task_name=task_name, original_func=unknown, labels={}
        )

    broker.find_task = find_task  # type: ignore[method-assign]
    broker._taskiq_flow_unknown_tasks = True  # type: ignore[attr-defined]


def _droppable(func: Callable[..., Any]) -> Callable[..., Any]:
    """``func``, unless ``pre_execute`` dropped the message (it then passes only
    ``_DROPPED``): a keyword, not a context variable, since sync tasks run on threads."""
    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def droppable_async(*args: Any, **kwargs: Any) -> Any:
            if _DROPPED in kwargs:
                raise RunEnded(reason=kwargs[_DROPPED])
            return await func(*args, **kwargs)

        return droppable_async

    @functools.wraps(func)
    def droppable(*args: Any, **kwargs: Any) -> Any:
        if _DROPPED in kwargs:
            raise RunEnded(reason=kwargs[_DROPPED])
        return func(*args, **kwargs)

    return droppable
