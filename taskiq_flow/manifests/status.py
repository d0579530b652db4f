"""A run's ``status`` (the PipelineRun shape) from its ``ExecutionReport``: the one builder,
used by ``taskiq-flow run`` and by the operator alike."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from taskiq_flow.core.report import ExecutionReport, StepReport
from taskiq_flow.manifests.models import (
    Condition,
    ItemCounts,
    PipelineRunStatus,
    RunPhase,
    StepPhase,
    StepStatus,
)

__all__ = [
    "INLINE_OUTPUT_BYTES",
    "MESSAGE_CHARS",
    "inline_outputs",
    "rfc3339",
    "run_status",
    "step_status",
    "truncated",
]

INLINE_OUTPUT_BYTES = 4096
"""Outputs larger than this (as JSON) appear in a status as ``{truncated, bytes}``."""

_DONE = {StepPhase.SUCCEEDED, StepPhase.SKIPPED}
"""The phases of a step whose work needs no more doing: what ``progress`` counts (a Failed
or Cancelled step is over, not done)."""


def rfc3339(timestamp: float | None) -> str | None:
    """A Unix time as an RFC 3339 UTC string (``2024-05-01T12:00:00.123Z``)."""
    if timestamp is None:
        return None
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


MESSAGE_CHARS = 1024
"""A step's error appears in a status cut to this many characters (a status is bounded)."""


def step_status(step: StepReport) -> StepStatus:
    """One step of the report in the PipelineRun shape."""
    items = None
    if step.items is not None:
        items = ItemCounts(
            total=step.items.get("total", 0),
            succeeded=step.items.get("succeeded", 0),
            failed=step.items.get("failed", 0),
            running=step.running_items,
        )
    return StepStatus(
        phase=StepPhase(step.status),
        attempts=step.attempts or None,
        started_at=rfc3339(step.started_at),
        finished_at=rfc3339(step.finished_at),
        duration_seconds=_round(step.duration),
        message=None if step.error is None else step.error[:MESSAGE_CHARS],
        items=items,
    )


def truncated(size: int) -> dict[str, Any]:
    """How an output larger than ``INLINE_OUTPUT_BYTES`` appears in a status."""
    return {"truncated": True, "bytes": size}


def inline_outputs(outputs: Mapping[str, Any], limit: int = INLINE_OUTPUT_BYTES) -> dict[str, Any]:
    """Outputs for a status: small ones as they are, large ones as ``truncated``. Sizes
    are of compact JSON, as the operator's workers store outputs."""
    result: dict[str, Any] = {}
    for name, value in outputs.items():
        text = json.dumps(value, default=str, separators=(",", ":"))
        size = len(text.encode())
        result[name] = json.loads(text) if size <= limit else truncated(size)
    return result


def run_status(
    report: ExecutionReport,
    *,
    outputs: Mapping[str, Any] | None = None,
    generation: int | None = None,
) -> PipelineRunStatus:
    """The PipelineRun ``status`` for ``report``: what ``taskiq-flow run -o json`` prints
    and what the operator writes (``outputs`` inline when given, large ones cut)."""
    steps = {name: step_status(s) for name, s in report.steps.items()}
    done = sum(1 for s in steps.values() if s.phase in _DONE)
    phase = RunPhase(report.status)
    finished = phase in _FINISHED
    message = None
    if finished and phase is not RunPhase.SUCCEEDED:
        message = report.reason or None
    reason = "Timeout" if report.timed_out else phase.value
    return PipelineRunStatus(
        phase=phase,
        progress=f"{done}/{len(steps)}",
        started_at=rfc3339(report.started_at),
        finished_at=rfc3339(report.finished_at) if finished else None,
        duration_seconds=_round(report.duration) if finished else None,
        observed_generation=generation,
        message=message,
        conditions=[
            Condition(
                type="Succeeded",
                status=_CONDITION.get(phase, "Unknown"),
                reason=reason,
                message=message,
                last_transition_time=rfc3339(report.finished_at if finished else report.started_at),
            )
        ],
        steps=steps,
        outputs=None if outputs is None else inline_outputs(outputs),
    )


_FINISHED = {RunPhase.SUCCEEDED, RunPhase.FAILED, RunPhase.CANCELLED}
_CONDITION: dict[RunPhase, Literal["True", "False"]] = {
    RunPhase.SUCCEEDED: "True",
    RunPhase.FAILED: "False",
    RunPhase.CANCELLED: "False",
}
