"""Pure builders of ``status`` patches for Pipelines and PipelineRuns."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from taskiq_flow.core.report import report_of
from taskiq_flow.manifests.compiler import CompiledPipeline
from taskiq_flow.manifests.status import INLINE_OUTPUT_BYTES, rfc3339, run_status
from taskiq_flow_operator.driving import RunDriver

__all__ = [
    "INLINE_OUTPUT_BYTES",
    "build_invalid_pipeline_status",
    "build_pending_run_status",
    "build_pipeline_status",
    "build_rejected_run_status",
    "build_run_status",
    "condition",
]


def condition(
    type_: str, status: str, reason: str, message: str | None, when: float | None
) -> dict[str, Any]:
    """One entry of ``status.conditions``."""
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message or "",
        "lastTransitionTime": rfc3339(when),
    }


def build_pipeline_status(
    compiled: CompiledPipeline, generation: int | None, deployment: str, now: float
) -> dict[str, Any]:
    """The status of a valid Pipeline."""
    dag = compiled.dag
    return {
        "phase": "Ready",
        "observedGeneration": generation,
        "message": None,
        "stepCount": len(dag),
        "conditions": [
            condition("Ready", "True", "Valid", f"{len(dag)} steps, {len(dag.levels)} levels", now)
        ],
        "dag": {
            "levels": [list(level) for level in dag.plan.levels],
            "criticalPath": dag.critical_path(),
        },
        "worker": {"deployment": deployment},
    }


def build_invalid_pipeline_status(
    message: str, generation: int | None, steps: int | None, now: float
) -> dict[str, Any]:
    """The status of a Pipeline that does not validate."""
    return {
        "phase": "Invalid",
        "observedGeneration": generation,
        "message": message,
        "stepCount": steps,
        "conditions": [condition("Ready", "False", "Invalid", message, now)],
        "dag": None,
    }


def build_pending_run_status(
    reason: str, message: str, generation: int | None, now: float
) -> dict[str, Any]:
    """A run that cannot start yet (its Pipeline is missing)."""
    return {
        "phase": "Pending",
        "observedGeneration": generation,
        "message": message,
        "conditions": [condition("Succeeded", "Unknown", reason, message, now)],
    }


def build_rejected_run_status(
    reason: str, message: str, generation: int | None, now: float
) -> dict[str, Any]:
    """A run that fails before any step runs (invalid pipeline, bad inputs)."""
    return {
        "phase": "Failed",
        "observedGeneration": generation,
        "message": message,
        "startedAt": rfc3339(now),
        "finishedAt": rfc3339(now),
        "durationSeconds": 0.0,
        "progress": "0/0",
        "conditions": [condition("Succeeded", "False", reason, message, now)],
    }


def build_run_status(
    driver: RunDriver,
    *,
    generation: int | None,
    now: float,
    outputs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The PipelineRun ``status`` for where ``driver`` is: the library's one builder
    (``run_status``), as a merge patch (a field that became empty is sent as null, and
    so removed)."""
    report = report_of(driver.machine, driver.run, now)
    status = run_status(report, outputs=outputs, generation=generation)
    patch = status.model_dump(by_alias=True, mode="json")
    if outputs is None:
        del patch["outputs"]  # kept as they are until the final status
    return patch
