"""Phases of a step and outcomes of a run."""

from enum import StrEnum

__all__ = ["FINISHED", "TERMINAL", "Phase", "RunOutcome", "tracking_status"]


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
