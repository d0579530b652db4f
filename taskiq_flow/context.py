"""``PipelineContext``: what a task may learn about the run it belongs to."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

__all__ = ["ExecutionMode", "PipelineContext"]

ExecutionMode = Literal["sequential", "parallel", "map_reduce"]


class PipelineContext(BaseModel):
    """Injected into a task parameter annotated with ``PipelineContext``.

    It is built on the worker, from labels the driver puts on the message, so it costs
    nothing to tasks that do not ask for it.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    pipeline_id: str
    step_index: int
    task_id: str
    execution_mode: ExecutionMode
    started_at: datetime
    broker: Any = None
    step_name: str = ""
    attempt: int = 1
