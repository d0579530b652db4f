"""Pure builders of ``status`` patches for Pipelines and PipelineRuns."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from taskiq_flow.core.states import TERMINAL, Phase, RunOutcome
from taskiq_flow.manifests.compiler import CompiledPipeline
from taskiq_flow.manifests.status import INLINE_OUTPUT_BYTES, rfc3339
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


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _step_record(driver: RunDriver, name: str) -> dict[str, Any]:
    state = driver.machine.nodes[name]
    record: dict[str, Any] = {"phase": state.phase.value}
    if state.attempt:
        record["attempts"] = state.attempt
    if state.first_started is not None:
        record["startedAt"] = rfc3339(state.first_started)
    if state.phase in TERMINAL and state.finished is not None:
        record["finishedAt"] = rfc3339(state.finished)
        if state.first_started is not None:
            record["durationSeconds"] = _round(state.finished - state.first_started)
    if state.error is not None and state.phase is not Phase.SUCCEEDED:
        record["message"] = state.error[:1024]
    fan = driver.machine.fanouts.get(name)
    if fan is not None:
        record["items"] = fan.counts()
        if state.phase is not Phase.RUNNING:
            record["items"]["running"] = 0  # abandoned with their step
    return record


def build_run_status(
    driver: RunDriver,
    *,
    generation: int | None,
    now: float,
    outputs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The PipelineRun ``status`` for where ``driver`` is."""
    machine = driver.machine
    done, total = machine.progress()
    started = machine.started_at
    outcome = machine.outcome
    if outcome is None:
        phase = "Running" if started is not None else "Pending"
        status, reason, message = "Unknown", phase, None
        finished = None
        when = started
    else:
        phase = outcome.outcome.value
        status = "True" if outcome.outcome is RunOutcome.SUCCEEDED else "False"
        reason = phase
        message = outcome.reason
        finished = max(
            (s.finished for s in machine.nodes.values() if s.finished is not None),
            default=now,
        )
        if machine.timed_out or outcome.outcome is RunOutcome.CANCELLED:
            finished = now if finished is None else max(finished, now)
        if machine.timed_out:
            reason = "Timeout"
        when = finished
    result: dict[str, Any] = {
        "phase": phase,
        "progress": f"{done}/{total}",
        "startedAt": rfc3339(started),
        "finishedAt": rfc3339(finished),
        "durationSeconds": _round(finished - started)
        if finished is not None and started is not None
        else None,
        "observedGeneration": generation,
        "message": message,
        "conditions": [condition("Succeeded", status, reason, message, when)],
        "steps": {name: _step_record(driver, name) for name in driver.dag.plan.order},
    }
    if outputs is not None:
        result["outputs"] = dict(outputs)
    return result


def truncated(size: int) -> dict[str, Any]:
    """How a large output appears in ``status.outputs``."""
    return {"truncated": True, "bytes": size}
