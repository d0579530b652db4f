"""``PipelineMiddleware``: the worker side of taskiq-flow.

Add it to the broker in every process that runs pipeline tasks (the engine adds it to
the broker it drives when it is missing, so one-process setups need nothing)::

    broker.add_middlewares(PipelineMiddleware())

For tasks that belong to a pipeline run it injects ``PipelineContext`` into a parameter
annotated with it, and after the result is saved it tells the run's driver that the task
finished (see ``taskiq_flow.completions``) and calls ``on_step_complete``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from taskiq import AsyncBroker, TaskiqMessage, TaskiqMiddleware, TaskiqResult
from taskiq.exceptions import NoResultError

from taskiq_flow.completions import (
    LABEL_ATTEMPT,
    LABEL_MODE,
    LABEL_NODE,
    LABEL_RUN,
    LABEL_STARTED,
    LABEL_STEP,
    publish_completion,
)
from taskiq_flow.context import PipelineContext
from taskiq_flow.decorators import context_parameter

__all__ = ["PipelineMiddleware", "ensure_middleware"]

logger = logging.getLogger("taskiq_flow.middleware")

_NO_CONTEXT = ""


class PipelineMiddleware(TaskiqMiddleware):
    """Injects ``PipelineContext`` and reports finished pipeline steps to their driver.

    Subclass it and override ``on_step_complete`` to observe steps; call ``super()``.
    """

    def __init__(self) -> None:
        super().__init__()
        self._context_params: dict[str, str] = {}

    def _context_param(self, task_name: str) -> str | None:
        cached = self._context_params.get(task_name)
        if cached is None:
            task = self.broker.find_task(task_name)
            found = context_parameter(task.original_func) if task is not None else None
            cached = self._context_params[task_name] = found or _NO_CONTEXT
        return cached or None

    def pre_execute(self, message: TaskiqMessage) -> TaskiqMessage:
        """Inject ``PipelineContext`` when the task asks for it."""
        if LABEL_RUN not in message.labels:
            return message
        param = self._context_param(message.task_name)
        if param is not None and param not in message.kwargs:
            message.kwargs[param] = context_from(message, self.broker)
        return message

    async def post_save(self, message: TaskiqMessage, result: TaskiqResult[Any]) -> None:
        """Report the finished step to its run."""
        run_id = message.labels.get(LABEL_RUN)
        if run_id is None or isinstance(result.error, NoResultError):
            return
        try:
            await publish_completion(self.broker, str(run_id), message.task_id, result)
        except Exception:
            # The driver's safety net (its step timeout or the result backend) still
            # sees the result; a failed notification must not fail the task.
            logger.exception("could not report completion of task %s", message.task_id)
        try:
            await self.on_step_complete(context_from(message, self.broker), result)
        except Exception:
            logger.exception("on_step_complete raised for task %s", message.task_id)

    async def on_step_complete(self, ctx: PipelineContext, result: TaskiqResult[Any]) -> None:
        """Called on the worker after each pipeline step's result is saved."""


def context_from(message: TaskiqMessage, broker: AsyncBroker) -> PipelineContext:
    """The ``PipelineContext`` of a pipeline task's message."""
    labels = message.labels
    started = labels.get(LABEL_STARTED)
    return PipelineContext(
        pipeline_id=str(labels.get(LABEL_RUN, "")),
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
