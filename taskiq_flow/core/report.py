"""What a run's machine says about the run, as one report every driver shows the same way.

The in-process engine and the operator both keep a ``RunMachine``; ``report_of`` reads it
into an ``ExecutionReport``, and ``taskiq_flow.manifests.status.run_status`` turns that
into the PipelineRun ``status`` — one path from the core's state to what a user reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from taskiq_flow.core.states import Phase, RunOutcome

if TYPE_CHECKING:
    from taskiq_flow.core.machine import RunMachine

__all__ = ["ExecutionReport", "StepReport", "report_of"]


@dataclass(slots=True)
class StepReport:
    """What happened to one step."""

    name: str
    status: str
    attempts: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    duration: float | None = None
    error: str | None = None
    items: dict[str, int] | None = None  # total, succeeded, failed (a map or filter step)
    item_errors: dict[int, str] = field(default_factory=dict)
    running_items: int = 0  # items in flight now


@dataclass(slots=True)
class ExecutionReport:
    """Per-step status, attempts, durations and errors of one run, and its success rate."""

    pipeline_id: str
    status: str
    started_at: float | None
    finished_at: float | None
    duration: float | None
    steps: dict[str, StepReport] = field(default_factory=dict)
    reason: str = ""
    timed_out: bool = False  # the run outlived its timeout

    @property
    def errors(self) -> dict[str, str]:
        """``{step: error}`` for the steps that failed."""
        return {n: s.error for n, s in self.steps.items() if s.status == "Failed" and s.error}

    @property
    def success_rate(self) -> float:
        """Share of steps that succeeded (1.0 for an empty report)."""
        if not self.steps:
            return 1.0
        ok = sum(1 for s in self.steps.values() if s.status == Phase.SUCCEEDED)
        return ok / len(self.steps)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data."""
        return {
            "pipeline_id": self.pipeline_id,
            "status": self.status,
            "reason": self.reason,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "duration": self.duration,
            "success_rate": self.success_rate,
            "errors": self.errors,
            "steps": {
                name: {
                    "status": s.status,
                    "attempts": s.attempts,
                    "duration": s.duration,
                    "started_at": s.started_at,
                    "finished_at": s.finished_at,
                    "error": s.error,
                    "items": s.items,
                }
                for name, s in self.steps.items()
            },
        }


def _step(machine: RunMachine, name: str, wall: float) -> StepReport:
    state = machine.nodes[name]
    started = None if state.first_started is None else state.first_started + wall
    finished = None if state.finished is None else state.finished + wall
    duration = None
    if state.first_started is not None and state.finished is not None:
        duration = state.finished - state.first_started
    fan = machine.fanouts.get(name)
    items = None
    running = 0
    if fan is not None:
        counts = fan.counts()
        in_flight = counts.pop("running")
        # Items in flight are abandoned with a step that is no longer running.
        running = in_flight if state.phase in (Phase.RUNNING, Phase.RETRYING) else 0
        items = counts
    return StepReport(
        name=name,
        status=state.phase.value,
        attempts=state.attempt,
        started_at=started,
        finished_at=finished,
        duration=duration,
        error=state.error if state.phase is not Phase.SUCCEEDED else None,
        items=items,
        item_errors=dict(fan.errors) if fan is not None else {},
        running_items=running,
    )


def report_of(machine: RunMachine, run_id: str, now: float, wall: float = 0.0) -> ExecutionReport:
    """The report of ``machine``'s run at ``now`` (the machine's clock).

    ``wall`` turns the machine's clock into Unix time (the engine's clock is monotonic). A
    run that timed out or was cancelled finished when that was decided, which may be after
    its last step finished.
    """
    steps = {name: _step(machine, name, wall) for name in machine.plan.order}
    started = machine.started_at
    outcome = machine.outcome
    finished = None
    if outcome is not None:
        status = outcome.outcome.value
        finished = max((s.finished for s in machine.nodes.values() if s.finished), default=now)
        if machine.timed_out or outcome.outcome is RunOutcome.CANCELLED:
            finished = max(finished, now)
    else:
        status = "Running" if started is not None else "Pending"
    return ExecutionReport(
        pipeline_id=run_id,
        status=status,
        started_at=None if started is None else started + wall,
        finished_at=None if finished is None else finished + wall,
        duration=None if started is None or finished is None else finished - started,
        steps=steps,
        reason=outcome.reason if outcome is not None else "",
        timed_out=machine.timed_out,
    )
