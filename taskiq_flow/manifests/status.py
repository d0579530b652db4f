"""A run's ``status`` (the PipelineRun shape) from the engine's ``ExecutionReport``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from taskiq_flow.execution_engine import ExecutionReport, StepReport
from taskiq_flow.manifests.models import (
    Condition,
    ItemCounts,
    PipelineRunStatus,
    RunPhase,
    StepPhase,
    StepStatus,
)

__all__ = ["INLINE_OUTPUT_BYTES", "inline_outputs", "rfc3339", "run_status", "step_status"]

INLINE_OUTPUT_BYTES = 4096
"""Outputs larger than this (as JSON) appear in a status as ``{truncated, bytes}``."""

_TERMINAL = {StepPhase.SUCCEEDED, StepPhase.FAILED, StepPhase.SKIPPED, StepPhase.CANCELLED}


def rfc3339(timestamp: float | None) -> str | None:
    """A Unix time as an RFC 3339 UTC string (``2024-05-01T12:00:00.123Z``)."""
    if timestamp is None:
        return None
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def step_status(step: StepReport, max_parallel: int | None = None) -> StepStatus:
    """One step of the report in the PipelineRun shape."""
    items = None
    if step.items is not None:
        total = step.items.get("total", 0)
        succeeded = step.items.get("succeeded", 0)
        failed = step.items.get("failed", 0)
        running = 0
        if step.status == StepPhase.RUNNING:
            running = max(total - succeeded - failed, 0)
            if max_parallel is not None:
                running = min(running, max_parallel)
        items = ItemCounts(total=total, succeeded=succeeded, failed=failed, running=running)
    return StepStatus(
        phase=StepPhase(step.status),
        attempts=step.attempts,
        started_at=rfc3339(step.started_at),
        finished_at=rfc3339(step.finished_at),
        duration_seconds=_round(step.duration),
        message=step.error,
        items=items,
    )


def inline_outputs(outputs: Mapping[str, Any], limit: int = INLINE_OUTPUT_BYTES) -> dict[str, Any]:
    """Outputs for a status: small ones as they are, large ones as ``{truncated, bytes}``."""
    result: dict[str, Any] = {}
    for name, value in outputs.items():
        text = json.dumps(value, default=str)
        size = len(text.encode())
        result[name] = json.loads(text) if size <= limit else {"truncated": True, "bytes": size}
    return result


def run_status(
    report: ExecutionReport,
    *,
    outputs: Mapping[str, Any] | None = None,
    message: str | None = None,
    max_parallel: Mapping[str, int | None] | None = None,
) -> PipelineRunStatus:
    """The PipelineRun ``status`` for ``report`` (outputs inline when given)."""
    limits = dict(max_parallel or {})
    steps = {name: step_status(s, limits.get(name)) for name, s in report.steps.items()}
    done = sum(1 for s in steps.values() if s.phase in _TERMINAL)
    phase = RunPhase(report.status) if report.status in set(RunPhase) else RunPhase.RUNNING
    if message is None and phase is not RunPhase.SUCCEEDED:
        message = report.reason or None
    condition = {
        RunPhase.SUCCEEDED: "True",
        RunPhase.FAILED: "False",
        RunPhase.CANCELLED: "False",
    }.get(phase, "Unknown")
    finished = phase in (RunPhase.SUCCEEDED, RunPhase.FAILED, RunPhase.CANCELLED)
    return PipelineRunStatus(
        phase=phase,
        progress=f"{done}/{len(steps)}",
        started_at=rfc3339(report.started_at),
        finished_at=rfc3339(report.finished_at) if finished else None,
        duration_seconds=_round(report.duration) if finished else None,
        message=message,
        conditions=[
            Condition(
                type="Succeeded",
                status=condition,  # type: ignore[arg-type]
                reason=phase.value,
                message=message,
                last_transition_time=rfc3339(report.finished_at if finished else report.started_at),
            )
        ],
        steps=steps,
        outputs=None if outputs is None else inline_outputs(outputs),
    )
