"""Phases of a step and outcomes of a run."""

from enum import StrEnum

__all__ = ["TERMINAL", "Phase", "RunOutcome"]


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
