"""Phases of a step and outcomes of a run."""

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = [
    "FINISHED",
    "MISSING_INPUT",
    "STEP",
    "TERMINAL",
    "NodeState",
    "Phase",
    "RunOutcome",
    "timeout_error",
    "tracking_status",
]


class Phase(StrEnum):
    """The phase of one step. The spellings are those of the PipelineRun status."""

    PENDING = "Pending"
    RUNNING = "Running"
    RETRYING = "Retrying"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SKIPPED = "Skipped"
    CANCELLED = "Cancelled"


TERMINAL = frozenset({Phase.SUCCEEDED, Phase.FAILED, Phase.SKIPPED, Phase.CANCELLED})


class RunOutcome(StrEnum):
    """How a whole run ended."""

    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"


FINISHED = frozenset(outcome.value for outcome in RunOutcome)
"""The phases of a run that is over, as a PipelineRun's ``status.phase`` spells them."""

_TRACKING = {
    RunOutcome.SUCCEEDED: "COMPLETED",
    RunOutcome.FAILED: "FAILED",
    RunOutcome.CANCELLED: "CANCELLED",
}


def tracking_status(outcome: RunOutcome) -> str:
    """The tracking API's word for a run's outcome (its records keep the guide's
    ``COMPLETED``/``FAILED``/``CANCELLED``); the one place the two vocabularies meet."""
    return _TRACKING[outcome]


MISSING_INPUT: Any = None
"""What a step receives for an input whose producer the core let it do without (a step
that failed under ``SkipFailed``): ``None``, on every driver."""

STEP = -1  # the item number of a timer that belongs to a step, not to one of its items


@dataclass(slots=True)
class NodeState:
    """What the machine knows of one step."""

    phase: Phase = Phase.PENDING
    attempt: int = 0
    first_started: float | None = None
    started: float | None = None
    finished: float | None = None
    retry_at: float | None = None
    deadline: float | None = None
    error: str | None = None  # why it failed, or why it was skipped
    cleared: bool = False  # its ``when`` condition held: it may start when there is room


def timeout_error(limit: float) -> str:
    """The error of an attempt that outlived its step's ``timeout``."""
    return f"TimeoutError: the step exceeded its timeout of {limit:g}s"
