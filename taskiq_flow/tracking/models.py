"""What tracking records: ``PipelineStatus`` per run, ``StepStatus`` per step, metrics."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

__all__ = [
    "PIPELINE_STATES",
    "STEP_STATES",
    "TERMINAL_STATES",
    "PipelineMetrics",
    "PipelineStatus",
    "StepStatus",
]

PIPELINE_STATES = ("PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED")
STEP_STATES = ("PENDING", "RUNNING", "COMPLETED", "FAILED")
TERMINAL_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED"})


class StepStatus(BaseModel):
    """One step of a tracked run."""

    step_name: str
    status: str = "PENDING"
    started_at: datetime | None = None
    completed_at: datetime | None = None
    duration_ms: float | None = None
    result: Any = None
    error: str | None = None


class PipelineStatus(BaseModel):
    """One tracked run: PENDING → RUNNING → COMPLETED / FAILED / CANCELLED."""

    pipeline_id: str
    status: str = "PENDING"
    pipeline_type: Literal["sequential", "dataflow"] = "sequential"
    started_at: datetime | None = None
    completed_at: datetime | None = None
    duration_ms: float | None = None
    steps: list[StepStatus] = Field(default_factory=list)
    result: Any = None
    error: str | None = None

    @property
    def is_finished(self) -> bool:
        """Whether the run ended (completed, failed or cancelled)."""
        return self.status in TERMINAL_STATES

    def step(self, name: str) -> StepStatus | None:
        """The first step called ``name``."""
        return next((s for s in self.steps if s.step_name == name), None)


class PipelineMetrics(BaseModel):
    """Aggregates over the runs of a period (``PipelineTrackingManager.get_metrics``)."""

    days: float
    total_pipelines: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    running: int = 0
    success_rate: float = 0.0
    """Completed runs over finished runs (0.0 when none finished)."""
    avg_duration_ms: float = 0.0
    """Mean duration of finished runs."""
    failure_reasons: dict[str, int] = Field(default_factory=dict)
    """Failed runs by error type (the text before the first colon)."""
    throughput_per_minute: float = 0.0
    """Runs started per minute between the first and the last start of the period."""
    avg_step_duration_ms: dict[str, float] = Field(default_factory=dict)
    longest_steps: list[tuple[str, float]] = Field(default_factory=list)
    """The slowest step executions: ``(step name, duration in ms)``, longest first."""
    busy_hours: dict[int, int] = Field(default_factory=dict)
    """Runs started per hour of the day (UTC), busiest first."""
